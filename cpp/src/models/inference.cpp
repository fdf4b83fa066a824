#include "tlcore/models/inference.h"

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/script.h>

#include <algorithm>
#include <sstream>
#include <vector>

#include "tlcore/error.h"

namespace tlcore::models {
namespace {

// The tracer recognises the model's tensors by identity when they are
// attributes of the module being traced: they become getattr nodes, which
// freezing then turns into constants it can fold and prepack.
torch::Tensor run(ModelImpl& model, const torch::Tensor& x, InferenceOutput output,
                  int64_t blocks) {
  switch (output) {
    case InferenceOutput::kLogits:
      return model.forward(x);
    case InferenceOutput::kEmbedding:
      return model.embed(x);
    case InferenceOutput::kFeatures:
      return model.features(x, blocks);
  }
  throw InvalidArgument("unknown inference output");
}

// glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh
// mmaps: every such activation is page-faulted in and unmapped again on each
// run, which made a batch of 32 at 224 px up to 10x slower per image than
// chunks whose activations stay below the threshold and are reused from the heap.
constexpr int64_t kActivationBudget = 24LL << 20;

// The largest intermediate tensor of the traced graph, in bytes per image (the
// trace ran on one image, so the recorded shapes are per image).
int64_t peak_activation_bytes(const torch::jit::Graph& graph) {
  int64_t peak = 0;
  for (const auto* node : graph.nodes()) {
    for (const auto* value : node->outputs()) {
      const auto type = value->type()->cast<c10::TensorType>();
      if (!type) continue;
      const auto numel = type->numel();
      if (numel) peak = std::max<int64_t>(peak, static_cast<int64_t>(*numel) * 4);
    }
  }
  return peak;
}

std::shared_ptr<torch::jit::Module> compile(ModelImpl& model, int64_t size, InferenceOutput output,
                                            int64_t blocks, int64_t& chunk) {
  auto module = std::make_shared<torch::jit::Module>("tlcore.InferenceModel");
  module->register_attribute("training", c10::BoolType::get(), false);
  int64_t index = 0;
  for (const auto& entry : model.state_dict()) {
    module->register_buffer("t" + std::to_string(index++), entry.second);
  }
  c10::InferenceMode not_inference(false);  // the tracer needs ordinary tensors
  const int64_t channels = model.in_channels() > 0 ? model.in_channels() : 3;
  // A constant example: drawing it from the global generator would shift the dropout
  // masks of a training epoch that compiles its frozen prefix on its first batch.
  const auto example = torch::full({1, channels, size, size}, 0.5);
  auto traced_fn = [&](torch::jit::Stack in) -> torch::jit::Stack {
    return {run(model, in.at(0).toTensor(), output, blocks)};
  };
  torch::NoGradGuard no_grad;
  auto traced = torch::jit::tracer::trace(
      {example}, traced_fn, [](const torch::autograd::Variable&) { return std::string(); },
      /*strict=*/false, /*force_outplace=*/false, module.get());
  const int64_t peak = peak_activation_bytes(*traced.first->graph);
  chunk = peak > 0 ? std::max<int64_t>(1, kActivationBudget / peak) : 0;
  auto* method = module->_ivalue()->compilation_unit()->create_function(
      c10::QualifiedName(*module->type()->name(), "forward"), traced.first->graph);
  module->type()->addMethod(method);
  auto optimized =
      std::make_shared<torch::jit::Module>(torch::jit::optimize_for_inference(*module));
  // oneDNN lacks some shapes (VGG's 7x7 pooling of a smaller map): try once, which also warms up.
  try {
    optimized->forward({example});
  } catch (const std::exception&) {
    return nullptr;
  }
  return optimized;
}

}  // namespace

InferenceModel::InferenceModel(std::shared_ptr<ModelImpl> model, int64_t image_size,
                               InferenceOutput output, int64_t blocks)
    : model_(std::move(model)), output_(output), blocks_(blocks) {
  if (!model_) throw InvalidArgument("InferenceModel: no model given");
  image_size_ = image_size > 0 ? image_size : model_->preprocess().input_size;
  if (output_ == InferenceOutput::kFeatures &&
      (blocks_ < 0 || blocks_ > model_->splittable_blocks()))
    throw InvalidArgument(model_->arch() + ": cannot cut after " + std::to_string(blocks_) +
                          " blocks");
  model_->eval();
  if (model_->arch() == "torchscript") return;
  try {
    compiled_ = compile(*model_, image_size_, output_, blocks_, chunk_);
  } catch (const c10::Error& e) {
    throw Error(model_->arch() +
                ": could not compile for inference: " + e.what_without_backtrace());
  }
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
  if (!compiled_) return run(*model_, x, output_, blocks_);
  const auto input = x.to(torch::kFloat).contiguous();
  if (chunk_ <= 0 || input.size(0) <= chunk_) return compiled_->forward({input}).toTensor();
  std::vector<torch::Tensor> parts;
  for (const auto& part : input.split(chunk_))
    parts.push_back(compiled_->forward({part}).toTensor());
  return torch::cat(parts);
}

}  // namespace tlcore::models
