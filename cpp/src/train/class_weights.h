// Per-class weights of the training loss (private to train/; balanced_class_weights,
// the public way to compute them, is declared in tlcore/train/trainer.h).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace tlcore::detail {

// Throws InvalidArgument unless `weights` is empty (unweighted) or has one entry per class.
void check_class_weights(const std::vector<double>& weights, std::int64_t num_classes);

// The training loss: cross-entropy with `weights` (when given) and label smoothing.
torch::nn::functional::CrossEntropyFuncOptions weighted_cross_entropy(
    const std::vector<double>& weights, double label_smoothing, torch::Device device);

}  // namespace tlcore::detail
