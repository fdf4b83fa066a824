#include "layers.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/torch_compat.h"
#include "tlcore/error.h"

namespace tlcore::models::detail {

namespace {

// ReLU6 for bf16 training. Torch 1.13's CPU hardtanh backward has no bf16 kernel
// ("hardshrink_backward_cpu" not implemented), and the backward of relu then clamp_max
// runs clamp_max's through `le` and `where`, which took 12 ms on a 64x576x10x10
// channels-last map where threshold_backward takes 0.6. So the gradient is masked by two
// threshold_backward calls on the output: out <= 0 (x <= 0) and 6 - out <= 0 (x >= 6),
// hardtanh's rule. 6 - out is exact where it matters (Sterbenz: out in [3, 6]).
struct ReLU6InPlace : torch::autograd::Function<ReLU6InPlace> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x) {
    ctx->mark_dirty({x});
    torch::hardtanh_(x, 0.0, 6.0);
    ctx->save_for_backward({x});
    return x;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto out = ctx->get_saved_variables()[0];
    // A global average pool hands back an expanded gradient (stride 0), which the masks
    // read 4x slower than a dense one in the output's layout.
    const auto grad = grads[0].contiguous(out.suggest_memory_format());
    const auto below_max = torch::threshold_backward(grad, out, 0.0);
    return {torch::threshold_backward(below_max, 6.0 - out, 0.0)};
  }
};

}  // namespace

torch::Tensor activate(torch::Tensor x, Act act) {
  switch (act) {
    case Act::kNone:
      return x;
    case Act::kReLU:
      return torch::relu_(x);
    case Act::kReLU6:
      // Inference keeps hardtanh, which int8 graphs quantize.
      if (x.requires_grad() && x.scalar_type() == torch::kBFloat16) return ReLU6InPlace::apply(x);
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

namespace {

bool trains_in_bf16(const torch::nn::Conv2d& conv, const torch::Tensor& x) {
  return torch::GradMode::is_enabled() && x.dim() == 4 && x.device().is_cpu() &&
         (x.requires_grad() || conv->weight.requires_grad()) &&
         x.is_contiguous(torch::MemoryFormat::ChannelsLast) &&
         compat::AutocastGuard::computes_in(c10::DeviceType::CPU, torch::kBFloat16);
}

bool pointwise(const torch::nn::Conv2d& conv) {
  const auto& o = conv->options;
  // Unqualified, `visit` finds c10's for torch 1.x's c10::variant and std's for 2.x's.
  const bool unpadded = visit(
      [](const auto& p) {
        if constexpr (std::is_same_v<std::decay_t<decltype(p)>, torch::ExpandingArray<2>>)
          return (*p)[0] == 0 && (*p)[1] == 0;
        return true;  // "valid", or "same", which pads nothing around a 1x1 kernel
      },
      o.padding());
  return (*o.kernel_size())[0] == 1 && (*o.kernel_size())[1] == 1 && (*o.stride())[0] == 1 &&
         (*o.stride())[1] == 1 && o.groups() == 1 && unpadded;
}

bool depthwise_wider_than_3(const torch::nn::Conv2d& conv) {
  const auto& o = conv->options;
  return o.groups() > 1 && o.groups() == o.in_channels() && o.groups() == o.out_channels() &&
         ((*o.kernel_size())[0] > 3 || (*o.kernel_size())[1] > 3);
}

}  // namespace

torch::Tensor convolve(torch::nn::Conv2d& conv, const torch::Tensor& x) {
  if (!trains_in_bf16(conv, x)) return conv->forward(x);
  if (depthwise_wider_than_3(conv)) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
    return conv->forward(x.to(torch::kFloat)).to(torch::kBFloat16);
  }
  if (!pointwise(conv)) return conv->forward(x);
  const auto n = x.size(0), h = x.size(2), w = x.size(3);
  // Channels-last: (n, h, w, c) is a view, and so is the product's way back.
  const auto rows = x.permute({0, 2, 3, 1}).reshape({n * h * w, x.size(1)});
  const auto bias = conv->options.bias() ? conv->bias : torch::Tensor();
  return torch::linear(rows, conv->weight.flatten(1), bias)
      .view({n, h, w, -1})
      .permute({0, 3, 1, 2});
}

int64_t make_divisible(double v, int64_t divisor, int64_t min_value) {
  if (min_value <= 0) min_value = divisor;
  int64_t rounded = std::max<int64_t>(
      min_value, static_cast<int64_t>(v + static_cast<double>(divisor) / 2) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}

namespace {

// `local` summed over all ranks. The gradient of the sum with respect to one rank's
// term is the sum of every rank's gradient, so the backward pass all-reduces too.
torch::Tensor summed_over_ranks(const torch::Tensor& local, const AllReduceSum& sum) {
  auto total = local.detach().clone();
  sum(total);
  // Exactly `total` in value (so every rank normalises alike), identity gradient to `local`.
  auto out = total + (local - local.detach());
  if (out.requires_grad())
    out.register_hook([sum](const torch::Tensor& grad) {
      auto g = grad.contiguous().clone();
      sum(g);
      return g;
    });
  return out;
}

}  // namespace

BatchNormImpl::BatchNormImpl(const torch::nn::BatchNormOptions& options) : options(options) {
  reset();
}

void BatchNormImpl::reset() {
  const int64_t c = options.num_features();
  if (options.affine()) {
    weight = register_parameter("weight", torch::ones({c}));
    bias = register_parameter("bias", torch::zeros({c}));
  }
  if (options.track_running_stats()) {
    running_mean = register_buffer("running_mean", torch::zeros({c}));
    running_var = register_buffer("running_var", torch::ones({c}));
    num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
  }
}

void BatchNormImpl::pretty_print(std::ostream& stream) const {
  stream << "BatchNorm2d(" << options.num_features() << ", eps=" << options.eps() << ", momentum=";
  if (options.momentum())
    stream << *options.momentum();
  else
    stream << "None";
  stream << ", affine=" << options.affine()
         << ", track_running_stats=" << options.track_running_stats() << ")";
}

double BatchNormImpl::count_batch() {
  torch::NoGradGuard no_grad;
  num_batches_tracked += 1;
  return options.momentum() ? *options.momentum()
                            : 1.0 / double(num_batches_tracked.item<int64_t>());
}

torch::Tensor BatchNormImpl::forward(const torch::Tensor& x) {
  if (sync_ && is_training()) return synchronised_forward(x);
  const bool track = options.track_running_stats();
  const double factor = is_training() && track ? count_batch() : 0.0;
  return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training() || !track,
                           factor, options.eps(), /*cudnn_enabled=*/true);
}

torch::Tensor BatchNormImpl::synchronised_forward(const torch::Tensor& x) {
  if (x.dim() != 4)
    throw InvalidArgument("BatchNorm: expected N x C x H x W input, got " +
                          std::to_string(x.dim()) + " dimensions");
  const auto xf = x.to(torch::kFloat);
  const int64_t channels = xf.size(1);
  const std::vector<int64_t> shape{1, channels, 1, 1};
  const std::vector<int64_t> dims{0, 2, 3};
  // Two passes in double, as torch's CPU kernel computes batch statistics: the mean
  // of all ranks' batches first, then the spread around it. (One pass of sums and
  // sums of squares cancels badly when a channel's spread is small against its mean.)
  const auto count = torch::full({1}, double(xf.numel() / channels),
                                 torch::TensorOptions(xf.device()).dtype(torch::kDouble));
  const auto sums =
      summed_over_ranks(torch::cat({xf.sum(dims, false, torch::kDouble), count}), sync_);
  const auto n = sums[channels];
  const auto mean = sums.narrow(0, 0, channels) / n;
  const auto spread =
      summed_over_ranks((xf.to(torch::kDouble) - mean.view(shape)).square().sum(dims), sync_);
  const auto var = spread / n;
  // The kernel's float arithmetic from here on: y = x * alpha + beta.
  auto alpha = torch::rsqrt(var + options.eps()).to(torch::kFloat);
  if (options.affine()) alpha = alpha * weight;
  auto beta = -mean.to(torch::kFloat) * alpha;
  if (options.affine()) beta = beta + bias;
  const auto y = xf * alpha.view(shape) + beta.view(shape);
  if (options.track_running_stats()) {
    const double factor = count_batch();
    torch::NoGradGuard no_grad;
    const double total = n.item<double>();
    running_mean.mul_(1.0 - factor).add_(mean.detach().to(torch::kFloat), factor);
    running_var.mul_(1.0 - factor)
        .add_((var.detach() * (total / std::max(total - 1.0, 1.0))).to(torch::kFloat), factor);
  }
  return y.to(x.dtype());
}

ConvNormActImpl::ConvNormActImpl(const ConvNormActOptions& o) : act_(o.act()) {
  conv_ =
      register_module("0", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in(), o.out(), o.kernel())
                                                 .stride(o.stride())
                                                 .padding((o.kernel() - 1) / 2)
                                                 .groups(o.groups())
                                                 .bias(false)));
  bn_ = register_module(
      "1",
      BatchNorm(torch::nn::BatchNormOptions(o.out()).eps(o.bn_eps()).momentum(o.bn_momentum())));
}

torch::Tensor ConvNormActImpl::forward(torch::Tensor x) {
  return activate(bn_->forward(convolve(conv_, x)), act_);
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
    } else if (auto* bn = m->as<BatchNorm>()) {
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

bool is_batchnorm(const torch::nn::Module& m) {
  return m.as<BatchNorm>() != nullptr || m.as<torch::nn::BatchNorm2d>() != nullptr;
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
