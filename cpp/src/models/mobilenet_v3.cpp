#include "tlcore/models/mobilenet.h"

#include "layers.h"

namespace tlcore::models {
namespace {

namespace nn = torch::nn;
using detail::Act;
using detail::ConvNormAct;
using detail::ConvNormActOptions;

// torchvision builds MobileNetV3 with BatchNorm2d(eps=0.001, momentum=0.01).
ConvNormActOptions cna(int64_t in, int64_t out, int64_t kernel, Act act) {
  return ConvNormActOptions(in, out, kernel).act(act).bn_eps(0.001).bn_momentum(0.01);
}

struct Setting {
  int64_t in, kernel, expanded, out;
  bool se;
  bool hardswish;
  int64_t stride;
};

// Tables 1 and 2 of the MobileNetV3 paper, as in torchvision's _mobilenet_v3_conf.
const std::vector<Setting>& settings(bool large) {
  static const std::vector<Setting> kLarge{
      {16, 3, 16, 16, false, false, 1},  {16, 3, 64, 24, false, false, 2},
      {24, 3, 72, 24, false, false, 1},  {24, 5, 72, 40, true, false, 2},
      {40, 5, 120, 40, true, false, 1},  {40, 5, 120, 40, true, false, 1},
      {40, 3, 240, 80, false, true, 2},  {80, 3, 200, 80, false, true, 1},
      {80, 3, 184, 80, false, true, 1},  {80, 3, 184, 80, false, true, 1},
      {80, 3, 480, 112, true, true, 1},  {112, 3, 672, 112, true, true, 1},
      {112, 5, 672, 160, true, true, 2}, {160, 5, 960, 160, true, true, 1},
      {160, 5, 960, 160, true, true, 1}};
  static const std::vector<Setting> kSmall{
      {16, 3, 16, 16, true, false, 2},  {16, 3, 72, 24, false, false, 2},
      {24, 3, 88, 24, false, false, 1}, {24, 5, 96, 40, true, true, 2},
      {40, 5, 240, 40, true, true, 1},  {40, 5, 240, 40, true, true, 1},
      {40, 5, 120, 48, true, true, 1},  {48, 5, 144, 48, true, true, 1},
      {48, 5, 288, 96, true, true, 2},  {96, 5, 576, 96, true, true, 1},
      {96, 5, 576, 96, true, true, 1}};
  return large ? kLarge : kSmall;
}

// torchvision's mobilenetv3.InvertedResidual: child "block" holds
// [expand], depthwise, [squeeze-excitation], project.
class InvertedResidualImpl : public nn::Module {
 public:
  explicit InvertedResidualImpl(const Setting& s) : residual_(s.stride == 1 && s.in == s.out) {
    const Act act = s.hardswish ? Act::kHardswish : Act::kReLU;
    nn::Sequential block;
    if (s.expanded != s.in) block->push_back(ConvNormAct(cna(s.in, s.expanded, 1, act)));
    block->push_back(ConvNormAct(
        cna(s.expanded, s.expanded, s.kernel, act).stride(s.stride).groups(s.expanded)));
    if (s.se) {
      block->push_back(detail::SqueezeExcitation(
          s.expanded, detail::make_divisible(s.expanded / 4, 8), Act::kReLU, Act::kHardsigmoid));
    }
    block->push_back(ConvNormAct(cna(s.expanded, s.out, 1, Act::kNone)));
    block_ = register_module("block", block);
  }

  torch::Tensor forward(torch::Tensor x) {
    auto y = block_->forward(x);
    return residual_ ? y += x : y;
  }

 private:
  bool residual_;
  nn::Sequential block_{nullptr};
};
TORCH_MODULE(InvertedResidual);

// torchvision's classifier Sequential, as a plain module so the head at "3" can be swapped.
class ClassifierImpl : public nn::Module {};
TORCH_MODULE(Classifier);

}  // namespace

MobileNetV3Impl::MobileNetV3Impl(const MobileNetV3Options& o)
    : ModelImpl(o.large() ? "mobilenet_v3_large" : "mobilenet_v3_small", Preprocess{}),
      dropout_(o.dropout()) {
  const auto& setting = settings(o.large());
  features_ = nn::Sequential();
  features_->push_back(ConvNormAct(cna(3, setting.front().in, 3, Act::kHardswish).stride(2)));
  for (const auto& s : setting) features_->push_back(InvertedResidual(s));
  const int64_t last_conv = 6 * setting.back().out;
  features_->push_back(ConvNormAct(cna(setting.back().out, last_conv, 1, Act::kHardswish)));
  register_module("features", features_);
  std::vector<Block> blocks;
  for (size_t i = 0; i < features_->size(); ++i) {
    const auto name = "features." + std::to_string(i);
    blocks.push_back({name, {name}});
  }
  const int64_t last_channel = o.large() ? 1280 : 1024;
  auto classifier = register_module("classifier", Classifier());
  fc_ = classifier->register_module("0", nn::Linear(last_conv, last_channel));
  blocks.push_back({"classifier.0", {"classifier.0"}});
  init_head(std::move(blocks), "classifier.3", last_channel, HeadOptions(o.num_classes()));
  detail::init_weights(*this, detail::LinearInit::kNormal001);
}

torch::Tensor MobileNetV3Impl::compute_embedding(const torch::Tensor& x) {
  return run_suffix(x, 0);
}

int64_t MobileNetV3Impl::splittable_blocks() const {
  return static_cast<int64_t>(features_->size());
}

torch::Tensor MobileNetV3Impl::run_prefix(const torch::Tensor& x, int64_t k) {
  return detail::run_range(*features_, x, 0, static_cast<size_t>(k));
}

torch::Tensor MobileNetV3Impl::run_suffix(const torch::Tensor& features, int64_t k) {
  auto y = fc_->forward(detail::global_avg_pool(
      detail::run_range(*features_, features, static_cast<size_t>(k), features_->size())));
  return torch::dropout(detail::activate(y, detail::Act::kHardswish), dropout_, is_training());
}

}  // namespace tlcore::models
