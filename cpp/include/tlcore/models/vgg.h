// VGG-11/13/16/19, with or without BatchNorm, torchvision's layout. The embedding
// is the 4096-wide output of the second fully connected layer ("classifier.3");
// the head replaces "classifier.6".
#pragma once

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "tlcore/models/model.h"

namespace tlcore::models {

struct VGGOptions {
  explicit VGGOptions(int64_t depth) : depth_(depth) {}
  // 11, 13, 16 or 19.
  TORCH_ARG(int64_t, depth);
  TORCH_ARG(bool, batch_norm) = false;
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(double, dropout) = 0.5;
};

class VGGImpl : public ModelImpl {
 public:
  explicit VGGImpl(const VGGOptions& options);

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override;

 private:
  torch::nn::Sequential features_{nullptr};
  torch::nn::Linear fc6_{nullptr}, fc7_{nullptr};
  double dropout_;
};
TORCH_MODULE(VGG);

}  // namespace tlcore::models
