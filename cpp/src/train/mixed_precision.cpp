#include "mixed_precision.h"

#include "tlcore/error.h"

namespace tlcore::detail {

Amp parse_amp(const std::string& amp, torch::Device device) {
  if (amp == "off" || amp.empty()) return {};
  if (amp == "bf16") return {true, torch::kBFloat16, false};
  if (amp == "fp16") {
    if (!device.is_cuda())
      throw InvalidArgument("amp 'fp16' needs a CUDA device (use 'bf16' on the CPU)");
    return {true, torch::kHalf, true};
  }
  throw InvalidArgument("amp must be 'off', 'bf16' or 'fp16', got '" + amp + "'");
}

models::Precision graph_precision(const Amp& amp, torch::Device device) {
  if (amp.enabled && amp.dtype == torch::kBFloat16 && device.is_cpu() &&
      models::cpu_features().bf16())
    return models::Precision::kBFloat16;
  return models::Precision::kFloat32;
}

LossScaler::LossScaler(bool enabled, torch::Device device, const LossScaleOptions& options)
    : enabled_(enabled), options_(options) {
  if (!enabled_) return;
  scale_ = torch::full({1}, options_.init_scale, torch::TensorOptions(device).dtype(torch::kFloat));
  growth_tracker_ = torch::zeros({1}, torch::TensorOptions(device).dtype(torch::kInt));
  found_inf_ = torch::zeros({1}, torch::TensorOptions(device).dtype(torch::kFloat));
}

torch::Tensor LossScaler::scale(const torch::Tensor& loss) const {
  return enabled_ ? loss * scale_ : loss;
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& params) {
  if (!enabled_) return true;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  found_inf_.zero_();
  at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf_, scale_.reciprocal());
  return found_inf_.item<float>() == 0;
}

void LossScaler::update() {
  if (!enabled_) return;
  at::_amp_update_scale_(scale_, growth_tracker_, found_inf_, options_.growth_factor,
                         options_.backoff_factor, options_.growth_interval);
}

double LossScaler::value() const { return enabled_ ? scale_.item<double>() : 1.0; }

}  // namespace tlcore::detail
