#include "tlcore/infer/prediction.h"

#include <algorithm>
#include <numeric>

#include "tlcore/error.h"

namespace tlcore {

Prediction decide(const float* probabilities, const std::vector<std::string>& classes,
                  int64_t top_k, double threshold) {
  if (classes.empty()) throw InvalidArgument("decide: a model without classes");
  const auto n = static_cast<int64_t>(classes.size());
  const auto k = static_cast<size_t>(std::clamp<int64_t>(top_k, 1, n));
  std::vector<size_t> order(classes.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](size_t a, size_t b) {
                      return probabilities[a] > probabilities[b] ||
                             (probabilities[a] == probabilities[b] && a < b);
                    });
  Prediction p;
  for (size_t i = 0; i < k; ++i) p.top_k.emplace_back(classes[order[i]], probabilities[order[i]]);
  p.confidence = p.top_k.front().second;
  p.unknown = p.confidence < threshold;
  p.label = p.unknown ? kUnknownLabel : p.top_k.front().first;
  return p;
}

}  // namespace tlcore
