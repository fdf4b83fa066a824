#include "tlcore/models/quantize.h"

#include "int8_graph.h"
#include "tlcore/error.h"
#include "tlcore/models/inference.h"
#include "traced_graph.h"

namespace tlcore::models {
namespace {

// The mean of fp32's minus int8's logits over `batches`, per output, both run as
// inference runs them (chunks, single images, the int8 graph's warm-up).
std::vector<double> mean_output_gap(const std::shared_ptr<ModelImpl>& model, int64_t image_size,
                                    const Int8Calibration& calibration,
                                    const std::vector<torch::Tensor>& batches) {
  const InferenceModel fp32(model, image_size, InferenceOutput::kLogits, 0, Precision::kFloat32);
  const InferenceModel int8(model, image_size, InferenceOutput::kLogits, 0, Precision::kInt8,
                            calibration);
  torch::Tensor sum;
  int64_t count = 0;
  for (const auto& batch : batches) {
    const auto x = batch.to(torch::kFloat).contiguous();
    const auto gap = (fp32.forward(x) - int8.forward(x)).to(torch::kDouble).sum(0);
    sum = sum.defined() ? sum + gap : gap;
    count += x.size(0);
  }
  sum = (sum / static_cast<double>(count)).contiguous();
  return {sum.data_ptr<double>(), sum.data_ptr<double>() + sum.numel()};
}

}  // namespace

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
  // Calibration runs the int8 graph (the output offset), so it needs int8 to run here.
  if (const auto cpu = cpu_features(); cpu.amx_int8)
    throw Unsupported("calibrate_int8: int8 cannot run here: " + int8_unavailable(cpu));
  model->eval();
  try {
    auto traced = detail::trace_for_inference(*model, image_size, InferenceOutput::kLogits, 0);
    auto observed = detail::observe_for_int8(traced.module, /*float_first_conv=*/true);
    torch::NoGradGuard no_grad;
    auto calibration = detail::calibrate_observed(observed, batches, image_size);
    // What quantization shifts on average, the same images measure and the output takes back.
    calibration.output_offset = mean_output_gap(model, image_size, calibration, batches);
    return calibration;
  } catch (const c10::Error& e) {
    throw Error(model->arch() + ": int8 calibration failed: " + e.what_without_backtrace());
  }
}

}  // namespace tlcore::models
