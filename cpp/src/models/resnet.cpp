#include "tlcore/models/resnet.h"

#include "layers.h"
#include "tlcore/error.h"

namespace tlcore::models {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).bias(false));
}

// BasicBlock (expansion 1) and Bottleneck (expansion 4) in one module: the names
// conv1..conv3, bn1..bn3 and downsample.{0,1} are torchvision's.
class ResidualImpl : public nn::Module {
 public:
  ResidualImpl(int64_t in, int64_t width, int64_t stride, bool bottleneck)
      : bottleneck_(bottleneck) {
    const int64_t out = bottleneck ? width * 4 : width;
    if (bottleneck) {
      conv1_ = register_module("conv1", conv(in, width, 1, 1));
      bn1_ = register_module("bn1", detail::BatchNorm(width));
      conv2_ = register_module("conv2", conv(width, width, 3, stride));
      bn2_ = register_module("bn2", detail::BatchNorm(width));
      conv3_ = register_module("conv3", conv(width, out, 1, 1));
      bn3_ = register_module("bn3", detail::BatchNorm(out));
    } else {
      conv1_ = register_module("conv1", conv(in, width, 3, stride));
      bn1_ = register_module("bn1", detail::BatchNorm(width));
      conv2_ = register_module("conv2", conv(width, width, 3, 1));
      bn2_ = register_module("bn2", detail::BatchNorm(width));
    }
    if (stride != 1 || in != out) {
      downsample_ = register_module(
          "downsample", nn::Sequential(conv(in, out, 1, stride), detail::BatchNorm(out)));
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    auto y = bn1_->forward(detail::convolve(conv1_, x)).relu_();
    y = bn2_->forward(conv2_->forward(y));
    if (bottleneck_) y = bn3_->forward(detail::convolve(conv3_, torch::relu_(y)));
    auto identity = downsample_ ? downsample_->forward(x) : x;
    return (y += identity).relu_();
  }

 private:
  bool bottleneck_;
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  detail::BatchNorm bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Residual);

struct Layout {
  int64_t counts[4];
  bool bottleneck;
};

Layout layout_of(int64_t depth) {
  switch (depth) {
    case 18:
      return {{2, 2, 2, 2}, false};
    case 34:
      return {{3, 4, 6, 3}, false};
    case 50:
      return {{3, 4, 6, 3}, true};
    case 101:
      return {{3, 4, 23, 3}, true};
    case 152:
      return {{3, 8, 36, 3}, true};
    default:
      throw InvalidArgument("resnet: depth must be 18, 34, 50, 101 or 152, got " +
                            std::to_string(depth));
  }
}

}  // namespace

ResNetImpl::ResNetImpl(const ResNetOptions& options)
    : ModelImpl("resnet" + std::to_string(options.depth()), Preprocess{}) {
  const Layout layout = layout_of(options.depth());
  conv1_ = register_module("conv1", conv(3, 64, 7, 2));
  bn1_ = register_module("bn1", detail::BatchNorm(64));
  int64_t in = 64;
  std::vector<Block> blocks{{"stem", {"conv1", "bn1"}}};
  for (int64_t i = 0; i < 4; ++i) {
    const int64_t width = 64 << i;
    nn::Sequential layer;
    for (int64_t j = 0; j < layout.counts[i]; ++j) {
      layer->push_back(Residual(in, width, (i > 0 && j == 0) ? 2 : 1, layout.bottleneck));
      in = layout.bottleneck ? width * 4 : width;
    }
    const std::string name = "layer" + std::to_string(i + 1);
    layers_[i] = register_module(name, layer);
    blocks.push_back({name, {name}});
  }
  init_head(std::move(blocks), "fc", in, HeadOptions(options.num_classes()));
  detail::init_weights(*this, detail::LinearInit::kDefault);
}

torch::Tensor ResNetImpl::compute_embedding(const torch::Tensor& x) { return run_suffix(x, 0); }

torch::Tensor ResNetImpl::stem(const torch::Tensor& x) {
  return torch::max_pool2d(bn1_->forward(conv1_->forward(x)).relu_(), 3, 2, 1);
}

torch::Tensor ResNetImpl::run_prefix(const torch::Tensor& x, int64_t k) {
  auto y = stem(x);
  for (int64_t i = 1; i < k; ++i) y = layers_[i - 1]->forward(y);
  return y;
}

torch::Tensor ResNetImpl::run_suffix(const torch::Tensor& features, int64_t k) {
  auto y = k == 0 ? stem(features) : features;
  for (int64_t i = std::max<int64_t>(k, 1); i < 5; ++i) y = layers_[i - 1]->forward(y);
  return detail::global_avg_pool(y);
}

}  // namespace tlcore::models
