#include "tlcore/models/mobilenet.h"

#include "layers.h"

namespace tlcore::models {
namespace {

namespace nn = torch::nn;
using detail::Act;
using detail::ConvNormAct;
using detail::ConvNormActOptions;

// torchvision's InvertedResidual: child "conv" holds [expand], depthwise, project, BN.
class InvertedResidualImpl : public nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand)
      : residual_(stride == 1 && in == out),
        project_(nn::Conv2dOptions(in * expand, out, 1).bias(false)),
        project_norm_(out) {
    const int64_t hidden = in * expand;
    nn::Sequential conv;
    if (expand != 1) {
      layers_.push_back(ConvNormAct(ConvNormActOptions(in, hidden, 1).act(Act::kReLU6)));
      conv->push_back(layers_.back());
    }
    layers_.push_back(ConvNormAct(
        ConvNormActOptions(hidden, hidden, 3).stride(stride).groups(hidden).act(Act::kReLU6)));
    conv->push_back(layers_.back());
    conv->push_back(project_);
    conv->push_back(project_norm_);
    register_module("conv", conv);
  }

  torch::Tensor forward(torch::Tensor x) {
    auto y = x;
    for (auto& layer : layers_) y = layer->forward(y);
    // Called here, not through the Sequential, so that the projection is a convolve().
    y = project_norm_->forward(detail::convolve(project_, y));
    return residual_ ? x + y : y;
  }

 private:
  bool residual_;
  // The children of "conv", in order: [expand], depthwise, project, its BatchNorm.
  std::vector<ConvNormAct> layers_;
  nn::Conv2d project_;
  detail::BatchNorm project_norm_;
};
TORCH_MODULE(InvertedResidual);

}  // namespace

MobileNetV2Impl::MobileNetV2Impl(const MobileNetV2Options& o)
    : ModelImpl("mobilenet_v2", Preprocess{}) {
  constexpr int64_t kSetting[][4] = {// expand t, channels c, repeats n, stride s
                                     {1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                     {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  constexpr int64_t kLastChannel = 1280;
  features_ = nn::Sequential();
  features_->push_back(ConvNormAct(ConvNormActOptions(3, 32, 3).stride(2).act(Act::kReLU6)));
  int64_t in = 32;
  for (const auto& s : kSetting) {
    for (int64_t i = 0; i < s[2]; ++i) {
      features_->push_back(InvertedResidual(in, s[1], i == 0 ? s[3] : 1, s[0]));
      in = s[1];
    }
  }
  features_->push_back(ConvNormAct(ConvNormActOptions(in, kLastChannel, 1).act(Act::kReLU6)));
  register_module("features", features_);
  std::vector<Block> blocks;
  for (size_t i = 0; i < features_->size(); ++i) {
    const auto name = "features." + std::to_string(i);
    blocks.push_back({name, {name}});
  }
  init_head(std::move(blocks), "classifier", kLastChannel,
            HeadOptions(o.num_classes()).kind(HeadKind::kDropoutLinear).dropout(o.dropout()));
  detail::init_weights(*this, detail::LinearInit::kNormal001);
}

torch::Tensor MobileNetV2Impl::compute_embedding(const torch::Tensor& x) {
  return run_suffix(x, 0);
}

int64_t MobileNetV2Impl::splittable_blocks() const {
  return static_cast<int64_t>(features_->size());
}

torch::Tensor MobileNetV2Impl::run_prefix(const torch::Tensor& x, int64_t k) {
  return detail::run_range(*features_, x, 0, static_cast<size_t>(k));
}

torch::Tensor MobileNetV2Impl::run_suffix(const torch::Tensor& features, int64_t k) {
  return detail::global_avg_pool(
      detail::run_range(*features_, features, static_cast<size_t>(k), features_->size()));
}

}  // namespace tlcore::models
