#include "tlcore/models/inference.h"

#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/shape_analysis.h>
#include <torch/script.h>

#include <algorithm>
#include <optional>
#include <sstream>
#include <unordered_set>
#include <vector>

#include "int8_graph.h"
#include "tlcore/error.h"
#include "tlcore/memory.h"
#include "traced_graph.h"

namespace tlcore::models {
namespace {

// glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh
// mmaps: every such activation is page-faulted in and unmapped again on each
// run, which made a batch of 32 at 224 px up to 10x slower per image than
// chunks whose activations stay below the threshold and are reused from the heap.
constexpr int64_t kActivationBudget = 24LL << 20;

int64_t bytes_per_value(Precision precision) {
  switch (precision) {
    case Precision::kFloat32:
      return 4;
    case Precision::kBFloat16:
      return 2;
    case Precision::kInt8:
      return 1;
  }
  return 4;
}

// What the compiled graph takes: bf16 and int8 run oneDNN's channels-last kernels.
torch::Tensor graph_input(const torch::Tensor& x, Precision precision) {
  switch (precision) {
    case Precision::kBFloat16:
      return x.to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
    case Precision::kInt8:
      return x.to(torch::kFloat).contiguous(torch::MemoryFormat::ChannelsLast);
    case Precision::kFloat32:
      break;
  }
  return x.to(torch::kFloat).contiguous();
}

// oneDNN's quantized convolutions keep their weights in the layout of the first run,
// and one chosen for a single image cannot be reordered for a batch (depthwise
// convolutions of MobileNetV2 fail at batch 2 after a first run at batch 1): the
// graph first runs on two images, and single images run as a pair (see forward).
torch::Tensor warm_up_batch(const torch::Tensor& example) {
  return example.expand({2, -1, -1, -1}).contiguous();
}

// The linear layer whose output the graph returns (the classifier) and which of its
// inputs is the activation: aten::linear, or aten::addmm(bias, x, weight.t()) where
// tracing decomposed it.
struct Classifier {
  torch::jit::Node* node = nullptr;
  size_t activation = 0;
};

std::optional<Classifier> returned_classifier(const std::shared_ptr<torch::jit::Graph>& graph) {
  auto* node = graph->outputs()[0]->node();
  if (node->kind() == c10::aten::linear) return Classifier{node, 0};
  if (node->kind() == c10::aten::addmm) return Classifier{node, 1};
  return std::nullopt;
}

// The constants only the classifier reads (its weight, perhaps through a transpose, and bias).
std::unordered_set<const torch::jit::Node*> classifier_constants(const Classifier& c) {
  std::unordered_set<const torch::jit::Node*> kept;
  for (size_t i = 0; i < c.node->inputs().size(); ++i) {
    if (i == c.activation) continue;
    const torch::jit::Node* node = c.node->input(i)->node();
    if (node->kind() == c10::aten::t && node->output()->uses().size() == 1)
      node = node->input(0)->node();
    if (node->kind() == c10::prim::Constant && node->output()->uses().size() == 1)
      kept.insert(node);
  }
  return kept;
}

// The frozen float graph with every floating constant (the weights, BatchNorm
// already folded in float32) in bf16, 4-d ones channels-last. The classifier stays
// float32: bf16 logits keep 8 bits, so logits near 10 move by up to 0.03 and close
// classes swap or tie; in float32 it costs a cast of the embedding.
torch::jit::Module to_bf16(const torch::jit::Module& traced) {
  auto frozen = torch::jit::freeze(traced);
  auto graph = frozen.get_method("forward").graph();
  const auto classifier = returned_classifier(graph);
  const auto kept = classifier ? classifier_constants(*classifier)
                               : std::unordered_set<const torch::jit::Node*>{};
  std::vector<torch::jit::Node*> constants;
  for (auto* node : graph->nodes())
    if (node->kind() == c10::prim::Constant && node->output()->type()->cast<c10::TensorType>() &&
        !kept.count(node))
      constants.push_back(node);
  if (classifier) {
    auto* node = classifier->node;
    torch::jit::WithInsertPoint here(node);
    const auto i = classifier->activation;
    node->replaceInput(i, graph->insert(c10::aten::to, {node->input(i), at::kFloat}));
  }
  for (auto* node : constants) {
    const auto value = torch::jit::toIValue(node->output())->toTensor();
    if (!value.is_floating_point()) continue;
    auto converted = value.to(torch::kBFloat16);
    if (converted.dim() == 4) converted = converted.contiguous(torch::MemoryFormat::ChannelsLast);
    torch::jit::WithInsertPoint here(node);
    node->output()->replaceAllUsesWith(graph->insertConstant(converted));
  }
  torch::jit::EraseShapeInformation(graph);
  torch::jit::EliminateDeadCode(graph);
  return frozen;
}

torch::jit::Module optimized(detail::TracedGraph& traced, Precision precision,
                             const Int8Calibration& int8) {
  switch (precision) {
    case Precision::kBFloat16:
      return to_bf16(traced.module);
    case Precision::kInt8:
      return detail::convert_to_int8(detail::observe_for_int8(traced.module, int8.float_first_conv),
                                     int8, traced.example);
    case Precision::kFloat32:
      break;
  }
  return torch::jit::optimize_for_inference(traced.module);
}

// The compiled graph, or null when it cannot run (oneDNN lacks some shapes, such as
// VGG's 7x7 pooling of a smaller map): trying once also warms it up.
std::shared_ptr<torch::jit::Module> compile(detail::TracedGraph& traced, Precision precision,
                                            const Int8Calibration& int8, int64_t& chunk) {
  const int64_t peak = traced.peak_activation_bytes / 4 * bytes_per_value(precision);
  chunk = peak > 0 ? std::max<int64_t>(1, kActivationBudget / peak) : 0;
  auto module = std::make_shared<torch::jit::Module>(optimized(traced, precision, int8));
  if (const auto cpu = cpu_features(); precision == Precision::kInt8 && cpu.amx_int8)
    throw Unsupported("int8 cannot run here: " + int8_unavailable(cpu));
  try {
    module->forward({graph_input(warm_up_batch(traced.example), precision)});
  } catch (const std::exception&) {
    return nullptr;
  }
  return module;
}

}  // namespace

InferenceModel::InferenceModel(std::shared_ptr<ModelImpl> model, int64_t image_size,
                               InferenceOutput output, int64_t blocks, Precision precision,
                               Int8Calibration int8)
    : model_(std::move(model)), output_(output), blocks_(blocks), precision_(precision) {
  if (!model_) throw InvalidArgument("InferenceModel: no model given");
  keep_freed_memory();
  image_size_ = image_size > 0 ? image_size : model_->preprocess().input_size;
  if (output_ == InferenceOutput::kFeatures &&
      (blocks_ < 0 || blocks_ > model_->splittable_blocks()))
    throw InvalidArgument(model_->arch() + ": cannot cut after " + std::to_string(blocks_) +
                          " blocks");
  if (precision_ == Precision::kInt8 && int8.empty())
    throw InvalidArgument(model_->arch() + ": int8 needs a calibrated model");
  if (precision_ == Precision::kInt8 && int8.image_size != image_size_)
    throw InvalidArgument(model_->arch() + ": calibrated for " + std::to_string(int8.image_size) +
                          " px images, not " + std::to_string(image_size_));
  model_->eval();
  if (model_->arch() == "torchscript") {
    precision_ = Precision::kFloat32;
    return;
  }
  try {
    auto traced = detail::trace_for_inference(*model_, image_size_, output_, blocks_);
    compiled_ = compile(traced, precision_, int8, chunk_);
    if (!compiled_ && precision_ != Precision::kFloat32) {
      precision_ = Precision::kFloat32;
      compiled_ = compile(traced, precision_, int8, chunk_);
    }
  } catch (const c10::Error& e) {
    throw Error(model_->arch() + ": could not compile for " + precision_name(precision_) +
                " inference: " + e.what_without_backtrace());
  } catch (const Unsupported& e) {
    throw Unsupported(model_->arch() + ": " + e.what());
  }
  if (!compiled_) precision_ = Precision::kFloat32;
}

torch::Tensor InferenceModel::forward(const torch::Tensor& x) const {
  const int64_t channels = model_->in_channels();
  if (!x.defined() || x.dim() != 4 || (channels > 0 && x.size(1) != channels) ||
      x.size(2) != image_size_ || x.size(3) != image_size_ || !x.is_floating_point()) {
    std::ostringstream msg;
    msg << model_->arch() << ": compiled for float N x " << (channels > 0 ? channels : 3) << " x "
        << image_size_ << " x " << image_size_ << " batches, got ";
    if (x.defined()) {
      msg << x.scalar_type() << " " << x.sizes();
    } else {
      msg << "an undefined tensor";
    }
    throw InvalidArgument(msg.str());
  }
  // Not InferenceMode: its tensors could not feed a tail that trains under autograd.
  torch::NoGradGuard no_grad;
  if (!compiled_) return detail::run_output(*model_, x, output_, blocks_);
  const auto input = graph_input(x, precision_);
  const auto run = [&](const torch::Tensor& part) {
    if (precision_ == Precision::kInt8 && part.size(0) == 1)
      return compiled_->forward({torch::cat({part, part})})
          .toTensor()
          .narrow(0, 0, 1)
          .to(torch::kFloat);
    return compiled_->forward({part}).toTensor().to(torch::kFloat);
  };
  if (chunk_ <= 0 || input.size(0) <= chunk_) return run(input);
  // Even parts: 32 images in chunks of 31 would run 31 + 1, the single image at batch-1 speed.
  const int64_t count = (input.size(0) + chunk_ - 1) / chunk_;
  std::vector<torch::Tensor> parts;
  for (const auto& part : input.split((input.size(0) + count - 1) / count))
    parts.push_back(run(part));
  return torch::cat(parts);
}

}  // namespace tlcore::models
