// MobileNetV2 and MobileNetV3 (small, large) with torchvision's layout.
#pragma once

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "tlcore/models/model.h"

namespace tlcore::models {

struct MobileNetV2Options {
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(double, dropout) = 0.2;
};

// Blocks features.0 .. features.18; the head is "classifier" (dropout + linear).
class MobileNetV2Impl : public ModelImpl {
 public:
  explicit MobileNetV2Impl(const MobileNetV2Options& options = {});
  int64_t splittable_blocks() const override;

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override;
  torch::Tensor run_prefix(const torch::Tensor& x, int64_t k) override;
  torch::Tensor run_suffix(const torch::Tensor& features, int64_t k) override;

 private:
  torch::nn::Sequential features_{nullptr};
};
TORCH_MODULE(MobileNetV2);

struct MobileNetV3Options {
  explicit MobileNetV3Options(bool large) : large_(large) {}
  TORCH_ARG(bool, large);
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(double, dropout) = 0.2;
};

// Blocks features.* then "classifier.0"; the embedding is the output of
// classifier.0 (1280 or 1024 wide) and the head is "classifier.3".
class MobileNetV3Impl : public ModelImpl {
 public:
  explicit MobileNetV3Impl(const MobileNetV3Options& options);
  int64_t splittable_blocks() const override;

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override;
  torch::Tensor run_prefix(const torch::Tensor& x, int64_t k) override;
  torch::Tensor run_suffix(const torch::Tensor& features, int64_t k) override;

 private:
  torch::nn::Sequential features_{nullptr};
  torch::nn::Linear fc_{nullptr};
  double dropout_;
};
TORCH_MODULE(MobileNetV3);

}  // namespace tlcore::models
