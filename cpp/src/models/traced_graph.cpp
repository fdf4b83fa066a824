#include "traced_graph.h"

#include <torch/csrc/jit/frontend/tracer.h>

#include <algorithm>
#include <string>

#include "tlcore/error.h"

namespace tlcore::models::detail {
namespace {

// The trace ran on one image, so the recorded shapes are per image.
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

}  // namespace

torch::Tensor run_output(ModelImpl& model, const torch::Tensor& x, InferenceOutput output,
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

TracedGraph trace_for_inference(ModelImpl& model, int64_t image_size, InferenceOutput output,
                                int64_t blocks) {
  TracedGraph traced{torch::jit::Module("tlcore.InferenceModel"), {}, 0};
  auto& module = traced.module;
  module.register_attribute("training", c10::BoolType::get(), false);
  int64_t index = 0;
  for (const auto& entry : model.state_dict())
    module.register_buffer("t" + std::to_string(index++), entry.second);
  c10::InferenceMode not_inference(false);  // the tracer needs ordinary tensors
  const int64_t channels = model.in_channels() > 0 ? model.in_channels() : 3;
  // A constant example: drawing it from the global generator would shift the dropout
  // masks of a training epoch that compiles its frozen prefix on its first batch.
  traced.example = torch::full({1, channels, image_size, image_size}, 0.5);
  // The tracer recognises the model's tensors by identity when they are
  // attributes of the module being traced: they become getattr nodes, which
  // freezing then turns into constants it can fold and prepack.
  auto traced_fn = [&](torch::jit::Stack in) -> torch::jit::Stack {
    return {run_output(model, in.at(0).toTensor(), output, blocks)};
  };
  torch::NoGradGuard no_grad;
  auto state = torch::jit::tracer::trace(
      {traced.example}, traced_fn, [](const torch::autograd::Variable&) { return std::string(); },
      /*strict=*/false, /*force_outplace=*/false, &module);
  traced.peak_activation_bytes = peak_activation_bytes(*state.first->graph);
  auto* method = module._ivalue()->compilation_unit()->create_function(
      c10::QualifiedName(*module.type()->name(), "forward"), state.first->graph);
  module.type()->addMethod(method);
  return traced;
}

}  // namespace tlcore::models::detail
