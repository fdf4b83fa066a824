// The layers' bf16 training paths against torch's own definitions: hardtanh's gradient
// for ReLU6, and the convolution for a pointwise convolution run as a matrix product.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "../../cpp/src/core/torch_compat.h"
#include "../../cpp/src/models/layers.h"

namespace tlcore::models {
namespace {

using detail::Act;

TEST(Layers, ReLU6TrainsInBf16WithHardtanhsGradient) {
  // Pre-activations on both sides of 0 and 6, the kinks themselves included.
  const auto x = torch::tensor({-1.0, 0.0, 0.5, 3.0, 5.96875, 6.0, 7.0})
                     .view({1, 7, 1, 1})
                     .repeat({2, 1, 2, 2})
                     .to(torch::kBFloat16)
                     .contiguous(torch::MemoryFormat::ChannelsLast);
  // bf16 values, which the upstream gradients (these, or a quarter of them) keep exactly.
  const auto weights = torch::randn({2, 7}).to(torch::kBFloat16).to(torch::kFloat);
  // A dense gradient, and the expanded one a global average pool hands back.
  for (const bool pooled : {false, true}) {
    const auto loss = [&](const torch::Tensor& y) {
      return pooled ? (y.to(torch::kFloat).mean({2, 3}) * weights).sum()
                    : (y.to(torch::kFloat) * weights.view({2, 7, 1, 1})).sum();
    };
    auto leaf = x.clone().requires_grad_();
    const auto y = detail::activate(leaf * 1, Act::kReLU6);  // in place, as in a model
    loss(y).backward();
    auto reference_leaf = x.to(torch::kFloat).requires_grad_();
    const auto reference = torch::hardtanh(reference_leaf, 0.0, 6.0);
    loss(reference).backward();
    EXPECT_TRUE(torch::equal(y.to(torch::kFloat), reference.detach()));
    EXPECT_TRUE(torch::equal(leaf.grad().to(torch::kFloat), reference_leaf.grad()))
        << "pooled " << pooled;
  }
}

TEST(Layers, PointwiseConvolutionTrainsInBf16AsTheConvolution) {
  torch::manual_seed(0);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(16, 24, 1).bias(true));
  const auto x = torch::randn({4, 16, 5, 5}).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto target = torch::randn({4, 24, 5, 5});
  const auto step = [&](bool through_convolve) {
    conv->zero_grad();
    auto input = x.clone().requires_grad_();
    const compat::AutocastGuard bf16(c10::DeviceType::CPU, torch::kBFloat16, true);
    auto y = through_convolve ? detail::convolve(conv, input) : conv->forward(input);
    // The product's rows come back as a view in the map's shape: the other path ran.
    EXPECT_EQ(y.is_view(), through_convolve);
    (y.to(torch::kFloat) * target).sum().backward();
    return std::vector<torch::Tensor>{y.detach().to(torch::kFloat), input.grad(),
                                      conv->weight.grad().clone(), conv->bias.grad().clone()};
  };
  const auto expected = step(false), got = step(true);
  for (size_t i = 0; i < expected.size(); ++i) {
    // Both compute in bf16 with float sums, in another order: about one bf16 step apart.
    const auto scale = expected[i].abs().max().item<double>();
    EXPECT_LT((got[i] - expected[i]).abs().max().item<double>(), 2e-2 * scale) << "output " << i;
  }
  EXPECT_EQ(got[0].sizes(), expected[0].sizes());
  // Without autocast it is the module's own forward.
  EXPECT_TRUE(torch::equal(detail::convolve(conv, x), conv->forward(x)));
}

TEST(Layers, WideDepthwiseConvolutionTrainsInBf16AsInFp32) {
  torch::manual_seed(0);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(8, 8, 5).padding(2).groups(8).bias(false));
  const auto x =
      torch::randn({2, 8, 6, 6}).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
  // bf16 values, which the gradient reaching the convolution keeps exactly.
  const auto target = torch::randn({2, 8, 6, 6}).to(torch::kBFloat16).to(torch::kFloat);
  auto input = x.clone().requires_grad_();
  torch::Tensor y;
  {
    const compat::AutocastGuard bf16(c10::DeviceType::CPU, torch::kBFloat16, true);
    y = detail::convolve(conv, input);
  }
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  (y.to(torch::kFloat) * target).sum().backward();
  // The definition, in fp32 on the same (bf16) input: the output rounded to bf16, the gradients
  // exact.
  auto reference_input = x.to(torch::kFloat).requires_grad_();
  const auto weight = conv->weight.detach().clone().requires_grad_();
  const auto reference = torch::conv2d(reference_input, weight, {}, 1, 2, 1, 8);
  (reference * target).sum().backward();
  EXPECT_TRUE(torch::equal(y, reference.detach().to(torch::kBFloat16)));
  EXPECT_TRUE(torch::allclose(input.grad().to(torch::kFloat), reference_input.grad(), 1e-2, 1e-2));
  EXPECT_TRUE(torch::allclose(conv->weight.grad(), weight.grad(), 1e-5, 1e-5));
}

}  // namespace
}  // namespace tlcore::models
