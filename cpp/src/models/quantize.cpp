#include "tlcore/models/quantize.h"

#include "int8_graph.h"
#include "tlcore/error.h"
#include "traced_graph.h"

namespace tlcore::models {

Int8Calibration calibrate_int8(const std::shared_ptr<ModelImpl>& model, int64_t image_size,
                               const std::vector<torch::Tensor>& batches) {
  if (!model) throw InvalidArgument("calibrate_int8: no model given");
  if (batches.empty()) throw InvalidArgument("calibrate_int8: no calibration images given");
  const int64_t channels = model->in_channels() > 0 ? model->in_channels() : 3;
  for (const auto& b : batches)
    if (!b.defined() || b.dim() != 4 || b.size(1) != channels || b.size(2) != image_size ||
        b.size(3) != image_size)
      throw InvalidArgument("calibrate_int8: expected N x " + std::to_string(channels) + " x " +
                            std::to_string(image_size) + " x " + std::to_string(image_size) +
                            " batches");
  if (model->arch() == "torchscript")
    throw Unsupported("calibrate_int8: a TorchScript backbone cannot be quantized by tlcore");
  model->eval();
  try {
    auto traced = detail::trace_for_inference(*model, image_size, InferenceOutput::kLogits, 0);
    auto observed = detail::observe_for_int8(traced.module);
    torch::NoGradGuard no_grad;
    auto calibration = detail::calibrate_observed(observed, batches, image_size);
    // What quantization shifts on average, the same images measure and the output takes back.
    const auto quantized = detail::convert_to_int8(detail::observe_for_int8(traced.module),
                                                   calibration, traced.example);
    calibration.output_offset = detail::mean_output_gap(traced.module, quantized, batches);
    return calibration;
  } catch (const c10::Error& e) {
    throw Error(model->arch() + ": int8 calibration failed: " + e.what_without_backtrace());
  }
}

}  // namespace tlcore::models
