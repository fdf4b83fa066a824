#include "tlcore/models/efficientnet.h"

#include <cmath>

#include "layers.h"
#include "tlcore/error.h"

namespace tlcore::models {
namespace {

namespace nn = torch::nn;
using detail::Act;
using detail::ConvNormAct;
using detail::ConvNormActOptions;

// torchvision's MBConv: child "block" holds [expand], depthwise, squeeze-excitation, project.
class MBConvImpl : public nn::Module {
 public:
  MBConvImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, double expand_ratio,
             double drop_prob)
      : residual_(stride == 1 && in == out), drop_prob_(drop_prob) {
    const int64_t expanded = detail::make_divisible(static_cast<double>(in) * expand_ratio, 8);
    nn::Sequential block;
    if (expanded != in) {
      block->push_back(ConvNormAct(ConvNormActOptions(in, expanded, 1).act(Act::kSiLU)));
    }
    block->push_back(ConvNormAct(ConvNormActOptions(expanded, expanded, kernel)
                                     .stride(stride)
                                     .groups(expanded)
                                     .act(Act::kSiLU)));
    block->push_back(detail::SqueezeExcitation(expanded, std::max<int64_t>(1, in / 4), Act::kSiLU,
                                               Act::kSigmoid));
    block->push_back(ConvNormAct(ConvNormActOptions(expanded, out, 1).act(Act::kNone)));
    block_ = register_module("block", block);
  }

  torch::Tensor forward(torch::Tensor x) {
    auto y = block_->forward(x);
    if (!residual_) return y;
    if (is_training() && drop_prob_ > 0.0) {
      // torchvision's StochasticDepth(mode="row"): drop whole samples, rescale the survivors.
      const double keep = 1.0 - drop_prob_;
      auto noise = torch::empty({y.size(0), 1, 1, 1}, y.options()).bernoulli_(keep).div_(keep);
      y = y * noise;
    }
    return y += x;
  }

 private:
  bool residual_;
  double drop_prob_;
  nn::Sequential block_{nullptr};
};
TORCH_MODULE(MBConv);

struct Variant {
  double width, depth, dropout;
  int64_t input_size, resize_size;
};

Variant variant_of(int64_t v) {
  // Multipliers from torchvision's efficientnet_bN builders; crop/resize from their weights.
  switch (v) {
    case 0:
      return {1.0, 1.0, 0.2, 224, 256};
    case 1:
      return {1.0, 1.1, 0.2, 240, 256};
    case 2:
      return {1.1, 1.2, 0.3, 288, 288};
    case 3:
      return {1.2, 1.4, 0.3, 300, 320};
    default:
      throw InvalidArgument("efficientnet: variant must be 0..3 (b0..b3), got " +
                            std::to_string(v));
  }
}

Preprocess preprocess_of(int64_t variant) {
  const Variant v = variant_of(variant);
  Preprocess pre;
  pre.input_size = v.input_size;
  pre.resize_size = v.resize_size;
  pre.interpolation = "bicubic";
  return pre;
}

}  // namespace

EfficientNetImpl::EfficientNetImpl(const EfficientNetOptions& o)
    : ModelImpl("efficientnet_b" + std::to_string(o.variant()), preprocess_of(o.variant())) {
  const Variant v = variant_of(o.variant());

  constexpr double kSetting[][6] = {
      // expand, kernel, stride, in, out, layers
      {1, 3, 1, 32, 16, 1},  {6, 3, 2, 16, 24, 2},   {6, 5, 2, 24, 40, 2},  {6, 3, 2, 40, 80, 3},
      {6, 5, 1, 80, 112, 3}, {6, 5, 2, 112, 192, 4}, {6, 3, 1, 192, 320, 1}};
  auto width = [&](double c) { return detail::make_divisible(c * v.width, 8); };
  auto depth = [&](double n) { return static_cast<int64_t>(std::ceil(n * v.depth)); };

  int64_t total = 0;
  for (const auto& s : kSetting) total += depth(s[5]);

  features_ = nn::Sequential();
  features_->push_back(
      ConvNormAct(ConvNormActOptions(3, width(kSetting[0][3]), 3).stride(2).act(Act::kSiLU)));
  int64_t id = 0;
  for (const auto& s : kSetting) {
    detail::Seq stage;
    int64_t in = width(s[3]);
    const int64_t out = width(s[4]);
    for (int64_t i = 0; i < depth(s[5]); ++i, ++id) {
      const double drop =
          o.stochastic_depth() * static_cast<double>(id) / static_cast<double>(total);
      stage->push_back(MBConv(in, out, static_cast<int64_t>(s[1]),
                              i == 0 ? static_cast<int64_t>(s[2]) : 1, s[0], drop));
      in = out;
    }
    features_->push_back(stage);
  }
  const int64_t last_in = width(kSetting[6][4]);
  features_->push_back(ConvNormAct(ConvNormActOptions(last_in, 4 * last_in, 1).act(Act::kSiLU)));
  register_module("features", features_);

  std::vector<Block> blocks;
  for (size_t i = 0; i < features_->size(); ++i) {
    const auto name = "features." + std::to_string(i);
    blocks.push_back({name, {name}});
  }
  init_head(std::move(blocks), "classifier", 4 * last_in,
            HeadOptions(o.num_classes()).kind(HeadKind::kDropoutLinear).dropout(v.dropout));
  detail::init_weights(*this, detail::LinearInit::kUniformFanOut);
}

torch::Tensor EfficientNetImpl::compute_embedding(const torch::Tensor& x) {
  return run_suffix(x, 0);
}

int64_t EfficientNetImpl::splittable_blocks() const {
  return static_cast<int64_t>(features_->size());
}

torch::Tensor EfficientNetImpl::run_prefix(const torch::Tensor& x, int64_t k) {
  return detail::run_range(*features_, x, 0, static_cast<size_t>(k));
}

torch::Tensor EfficientNetImpl::run_suffix(const torch::Tensor& features, int64_t k) {
  return detail::global_avg_pool(
      detail::run_range(*features_, features, static_cast<size_t>(k), features_->size()));
}

}  // namespace tlcore::models
