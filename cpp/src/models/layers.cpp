#include "layers.h"

#include <cmath>

namespace tlcore::models::detail {

torch::Tensor activate(torch::Tensor x, Act act) {
  switch (act) {
    case Act::kNone:
      return x;
    case Act::kReLU:
      return torch::relu_(x);
    case Act::kReLU6:
      return torch::hardtanh_(x, 0.0, 6.0);
    case Act::kHardswish:
      return torch::hardswish_(x);
    case Act::kSiLU:
      return torch::silu_(x);
    case Act::kSigmoid:
      return torch::sigmoid_(x);
    case Act::kHardsigmoid:
      return torch::hardsigmoid_(x);
  }
  return x;
}

int64_t make_divisible(double v, int64_t divisor, int64_t min_value) {
  if (min_value <= 0) min_value = divisor;
  int64_t rounded = std::max<int64_t>(
      min_value, static_cast<int64_t>(v + static_cast<double>(divisor) / 2) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}

ConvNormActImpl::ConvNormActImpl(const ConvNormActOptions& o) : act_(o.act()) {
  conv_ =
      register_module("0", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in(), o.out(), o.kernel())
                                                 .stride(o.stride())
                                                 .padding((o.kernel() - 1) / 2)
                                                 .groups(o.groups())
                                                 .bias(false)));
  bn_ = register_module(
      "1", torch::nn::BatchNorm2d(
               torch::nn::BatchNorm2dOptions(o.out()).eps(o.bn_eps()).momentum(o.bn_momentum())));
}

torch::Tensor ConvNormActImpl::forward(torch::Tensor x) {
  return activate(bn_->forward(conv_->forward(x)), act_);
}

SqueezeExcitationImpl::SqueezeExcitationImpl(int64_t channels, int64_t squeeze, Act act,
                                             Act scale_act)
    : act_(act), scale_act_(scale_act) {
  fc1_ = register_module("fc1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, squeeze, 1)));
  fc2_ = register_module("fc2", torch::nn::Conv2d(torch::nn::Conv2dOptions(squeeze, channels, 1)));
}

torch::Tensor SqueezeExcitationImpl::forward(torch::Tensor x) {
  auto scale = torch::adaptive_avg_pool2d(x, {1, 1});
  scale = activate(fc1_->forward(scale), act_);
  scale = activate(fc2_->forward(scale), scale_act_);
  return scale * x;
}

void init_weights(torch::nn::Module& root, LinearInit linear) {
  torch::NoGradGuard no_grad;
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    } else if (auto* fc = m->as<torch::nn::Linear>()) {
      if (linear == LinearInit::kNormal001) {
        fc->weight.normal_(0.0, 0.01);
        fc->bias.zero_();
      } else if (linear == LinearInit::kUniformFanOut) {
        const double range = 1.0 / std::sqrt(static_cast<double>(fc->weight.size(0)));
        fc->weight.uniform_(-range, range);
        fc->bias.zero_();
      }
    }
  }
}

torch::Tensor global_avg_pool(const torch::Tensor& x) {
  return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
}

torch::Tensor run_range(torch::nn::SequentialImpl& seq, torch::Tensor x, size_t begin, size_t end) {
  for (auto it = seq.begin() + static_cast<std::ptrdiff_t>(begin);
       it != seq.begin() + static_cast<std::ptrdiff_t>(end); ++it)
    x = it->forward(x);
  return x;
}

}  // namespace tlcore::models::detail
