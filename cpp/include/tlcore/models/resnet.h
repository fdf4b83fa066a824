// ResNet-18/34/50/101/152 with torchvision's layout (stride on the 3x3 conv, "v1.5").
#pragma once

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <memory>

#include "tlcore/models/model.h"

namespace tlcore::models {
namespace detail {
class BatchNormImpl;
}

struct ResNetOptions {
  explicit ResNetOptions(int64_t depth) : depth_(depth) {}
  // 18, 34, 50, 101 or 152.
  TORCH_ARG(int64_t, depth);
  TORCH_ARG(int64_t, num_classes) = 1000;
};

class ResNetImpl : public ModelImpl {
 public:
  explicit ResNetImpl(const ResNetOptions& options);
  // The stem and the four layers.
  int64_t splittable_blocks() const override { return 5; }

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override;
  torch::Tensor run_prefix(const torch::Tensor& x, int64_t k) override;
  torch::Tensor run_suffix(const torch::Tensor& features, int64_t k) override;

 private:
  torch::Tensor stem(const torch::Tensor& x);

  torch::nn::Conv2d conv1_{nullptr};
  std::shared_ptr<detail::BatchNormImpl> bn1_;
  torch::nn::Sequential layers_[4];
};
TORCH_MODULE(ResNet);

}  // namespace tlcore::models
