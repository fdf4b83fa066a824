#include "class_weights.h"

#include <string>

#include "tlcore/error.h"
#include "tlcore/train/trainer.h"

namespace tlcore {
namespace detail {

void check_class_weights(const std::vector<double>& weights, std::int64_t num_classes) {
  if (!weights.empty() && std::int64_t(weights.size()) != num_classes)
    throw InvalidArgument("class_weights has " + std::to_string(weights.size()) + " entries for " +
                          std::to_string(num_classes) + " classes");
}

torch::nn::functional::CrossEntropyFuncOptions weighted_cross_entropy(
    const std::vector<double>& weights, double label_smoothing, torch::Device device) {
  auto options = torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing);
  // Through double, so the weights round to float32 once, on the way to the device.
  if (!weights.empty())
    options.weight(torch::tensor(weights, torch::kDouble).to(device, torch::kFloat));
  return options;
}

}  // namespace detail

std::vector<double> balanced_class_weights(const std::vector<std::int64_t>& labels,
                                           std::int64_t num_classes) {
  std::vector<double> counts(static_cast<std::size_t>(num_classes), 0.0);
  for (auto y : labels) {
    if (y < 0 || y >= num_classes) throw InvalidArgument("class weights: label out of range");
    counts[static_cast<std::size_t>(y)] += 1;
  }
  // A class absent from `labels` weighs nothing: it contributes no loss anyway.
  std::vector<double> w(counts.size(), 0.0);
  for (std::size_t c = 0; c < counts.size(); ++c)
    w[c] = counts[c] > 0 ? double(labels.size()) / (double(num_classes) * counts[c]) : 0.0;
  return w;
}

}  // namespace tlcore
