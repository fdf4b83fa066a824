#include "tlcore/models/vgg.h"

#include "layers.h"
#include "tlcore/error.h"

namespace tlcore::models {
namespace {

namespace nn = torch::nn;

constexpr int64_t kPool = 0;

std::vector<int64_t> config_of(int64_t depth) {
  switch (depth) {
    case 11:
      return {64, kPool, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool};
    case 13:
      return {64, 64, kPool, 128, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool};
    case 16:
      return {64,    64,  kPool, 128, 128,   kPool, 256, 256, 256,
              kPool, 512, 512,   512, kPool, 512,   512, 512, kPool};
    case 19:
      return {64,  64,  kPool, 128, 128,   kPool, 256, 256, 256, 256,  kPool,
              512, 512, 512,   512, kPool, 512,   512, 512, 512, kPool};
    default:
      throw InvalidArgument("vgg: depth must be 11, 13, 16 or 19, got " + std::to_string(depth));
  }
}

// torchvision's classifier is a Sequential; this plain module keeps its child
// names ("0", "3", and the head at "6") while letting the head be swapped.
class ClassifierImpl : public nn::Module {};
TORCH_MODULE(Classifier);

}  // namespace

VGGImpl::VGGImpl(const VGGOptions& o)
    : ModelImpl("vgg" + std::to_string(o.depth()) + (o.batch_norm() ? "_bn" : ""), Preprocess{}),
      dropout_(o.dropout()) {
  features_ = nn::Sequential();
  std::vector<Block> blocks;
  std::vector<std::string> stage;
  int64_t in = 3;
  for (int64_t c : config_of(o.depth())) {
    if (c == kPool) {
      features_->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)));
      blocks.push_back({"stage" + std::to_string(blocks.size() + 1), stage});
      stage.clear();
      continue;
    }
    stage.push_back("features." + std::to_string(features_->size()));
    features_->push_back(nn::Conv2d(nn::Conv2dOptions(in, c, 3).padding(1)));
    if (o.batch_norm()) {
      stage.push_back("features." + std::to_string(features_->size()));
      features_->push_back(detail::BatchNorm(c));
    }
    features_->push_back(nn::ReLU(nn::ReLUOptions(true)));
    in = c;
  }
  register_module("features", features_);
  auto classifier = register_module("classifier", Classifier());
  fc6_ = classifier->register_module("0", nn::Linear(512 * 7 * 7, 4096));
  fc7_ = classifier->register_module("3", nn::Linear(4096, 4096));
  blocks.push_back({"classifier.0", {"classifier.0"}});
  blocks.push_back({"classifier.3", {"classifier.3"}});
  init_head(std::move(blocks), "classifier.6", 4096, HeadOptions(o.num_classes()));
  detail::init_weights(*this, detail::LinearInit::kNormal001);
}

torch::Tensor VGGImpl::compute_embedding(const torch::Tensor& x) {
  auto y = torch::adaptive_avg_pool2d(features_->forward(x), {7, 7}).flatten(1);
  y = torch::dropout(fc6_->forward(y).relu_(), dropout_, is_training());
  return torch::dropout(fc7_->forward(y).relu_(), dropout_, is_training());
}

}  // namespace tlcore::models
