// The two small baselines of the workshops: a simple CNN and an MLP. They train
// from scratch, so their preprocessing is just a resize and a 0.5/0.5 normalisation.
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include "tlcore/models/model.h"

namespace tlcore::models {

struct SimpleCNNOptions {
  TORCH_ARG(int64_t, num_classes) = 10;
  // 1 for grayscale.
  TORCH_ARG(int64_t, in_channels) = 3;
  // One block per entry: conv-BN-ReLU, then a 2x2 max pool.
  TORCH_ARG(std::vector<int64_t>, channels) = std::vector<int64_t>{32, 64, 128};
  // Convolutions per block (all at the block's channels, the pool after the last); empty: one
  // each. A second convolution sees twice the context at the block's resolution.
  TORCH_ARG(std::vector<int64_t>, depths) = {};
  TORCH_ARG(int64_t, input_size) = 32;
  TORCH_ARG(double, dropout) = 0.2;
};

// Convolutions features.0 .. features.(n-1), one per block unless `depths` says more, so a
// one-deep model's weights keep their names; embedding: global average of the last block.
// Head: "classifier" (dropout + linear).
class SimpleCNNImpl : public ModelImpl {
 public:
  explicit SimpleCNNImpl(const SimpleCNNOptions& options = {});

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override;

 private:
  torch::nn::Sequential features_{nullptr};
  // Whether a block ends after each convolution (and the map is pooled).
  std::vector<bool> pool_after_;
};
TORCH_MODULE(SimpleCNN);

struct MLPOptions {
  TORCH_ARG(int64_t, num_classes) = 10;
  TORCH_ARG(int64_t, in_channels) = 3;
  // Inputs must be input_size x input_size: the first layer sees every pixel.
  TORCH_ARG(int64_t, input_size) = 32;
  TORCH_ARG(std::vector<int64_t>, hidden) = std::vector<int64_t>{512, 256};
  TORCH_ARG(double, dropout) = 0.2;
};

// Blocks layers.0 .. layers.(k-1); embedding: the last hidden layer. Head: "classifier".
class MLPImpl : public ModelImpl {
 public:
  explicit MLPImpl(const MLPOptions& options = {});

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override;

 private:
  torch::nn::ModuleList layers_{nullptr};
  int64_t input_size_;
  double dropout_;
};
TORCH_MODULE(MLP);

}  // namespace tlcore::models
