// Building blocks shared by the model families (private to cpp/src/models).
// Child names follow torchvision's so that state dicts match key for key.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "tlcore/models/model.h"

namespace tlcore::models::detail {

// torch::nn::BatchNorm2d's parameters, buffers and arithmetic, plus normalising a
// training batch with the statistics of every rank's batch. (Deriving from
// BatchNorm2dImpl does not link: Debian's libtorch keeps its pretty_print hidden.)
class BatchNormImpl : public torch::nn::Cloneable<BatchNormImpl> {
 public:
  explicit BatchNormImpl(const torch::nn::BatchNormOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);
  void set_sync(AllReduceSum sum) { sync_ = std::move(sum); }

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  // Counts a training batch; returns the running statistics' update factor.
  double count_batch();
  torch::Tensor synchronised_forward(const torch::Tensor& x);
  AllReduceSum sync_;
};
TORCH_MODULE(BatchNorm);

// A BatchNorm layer of ours or torch's.
bool is_batchnorm(const torch::nn::Module& m);

// A Sequential with a plain Tensor forward, so that it can sit inside another
// Sequential or an AnyModule (torch::nn::Sequential's templated forward cannot).
class SeqImpl : public torch::nn::SequentialImpl {
 public:
  using SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x) { return SequentialImpl::forward(std::move(x)); }
};
TORCH_MODULE(Seq);

enum class Act { kNone, kReLU, kReLU6, kHardswish, kSiLU, kSigmoid, kHardsigmoid };

torch::Tensor activate(torch::Tensor x, Act act);

// conv->forward(x), with two exceptions where a convolution trains on a channels-last map
// under bf16 autocast on the CPU, for torch 1.13's oneDNN bf16 convolution backward:
// - A pointwise convolution (1x1, stride 1, ungrouped) runs as a matrix product of its rows.
//   The backward ran no faster than fp32 on a Xeon with AMX (a 160-to-960 1x1 at 5x5, batch
//   32: 7.0 ms against 6.5, forward and backward), the bf16 matrix product 2.7x faster (2.6
//   ms). The same sums, in another order.
// - A depthwise convolution wider than 3x3 (EfficientNet's 5x5) runs in fp32, its output
//   rounded to bf16: in bf16 its backward took 4-6x fp32's (1152 channels at 5x5: 95 ms
//   against 15).
torch::Tensor convolve(torch::nn::Conv2d& conv, const torch::Tensor& x);

// torchvision's _make_divisible: round to a multiple of `divisor`, never more than 10% down.
int64_t make_divisible(double v, int64_t divisor, int64_t min_value = 0);

struct ConvNormActOptions {
  ConvNormActOptions(int64_t in, int64_t out, int64_t kernel)
      : in_(in), out_(out), kernel_(kernel) {}
  TORCH_ARG(int64_t, in);
  TORCH_ARG(int64_t, out);
  TORCH_ARG(int64_t, kernel);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(Act, act) = Act::kReLU;
  TORCH_ARG(double, bn_eps) = 1e-5;
  TORCH_ARG(double, bn_momentum) = 0.1;
};

// torchvision's Conv2dNormActivation: children "0" (conv, no bias) and "1" (BatchNorm).
class ConvNormActImpl : public torch::nn::Module {
 public:
  explicit ConvNormActImpl(const ConvNormActOptions& o);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::Conv2d conv_{nullptr};
  BatchNorm bn_{nullptr};
  Act act_;
};
TORCH_MODULE(ConvNormAct);

// torchvision's SqueezeExcitation: fc1, fc2 as 1x1 convolutions.
class SqueezeExcitationImpl : public torch::nn::Module {
 public:
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze, Act act, Act scale_act);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::Conv2d fc1_{nullptr}, fc2_{nullptr};
  Act act_, scale_act_;
};
TORCH_MODULE(SqueezeExcitation);

// How a family initialises its Linear layers (torchvision differs per family).
enum class LinearInit { kDefault, kNormal001, kUniformFanOut };

// torchvision's shared scheme: conv kaiming-normal (fan_out), BatchNorm 1/0, Linear per `linear`.
void init_weights(torch::nn::Module& root, LinearInit linear);

torch::Tensor global_avg_pool(const torch::Tensor& x);

// Children [begin, end) of a Sequential, in order.
torch::Tensor run_range(torch::nn::SequentialImpl& seq, torch::Tensor x, size_t begin, size_t end);

}  // namespace tlcore::models::detail
