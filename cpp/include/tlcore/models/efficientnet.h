// EfficientNet-B0..B3 (torchvision's V1 layout: SiLU, squeeze-excitation,
// stochastic depth that is the identity in eval mode).
#pragma once

#include <torch/nn/modules/container/sequential.h>

#include "tlcore/models/model.h"

namespace tlcore::models {

struct EfficientNetOptions {
  explicit EfficientNetOptions(int64_t variant) : variant_(variant) {}
  // 0..3 for B0..B3.
  TORCH_ARG(int64_t, variant);
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(double, stochastic_depth) = 0.2;
};

// Blocks features.0 .. features.8; the head is "classifier" (dropout + linear).
class EfficientNetImpl : public ModelImpl {
 public:
  explicit EfficientNetImpl(const EfficientNetOptions& options);
  int64_t splittable_blocks() const override;

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override;
  torch::Tensor run_prefix(const torch::Tensor& x, int64_t k) override;
  torch::Tensor run_suffix(const torch::Tensor& features, int64_t k) override;

 private:
  torch::nn::Sequential features_{nullptr};
};
TORCH_MODULE(EfficientNet);

}  // namespace tlcore::models
