#include "tlcore/infer/prediction.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tlcore/error.h"

namespace tlcore {

double energy(const float* logits, int64_t classes) {
  if (classes <= 0) throw InvalidArgument("energy: no logits");
  // Shifted by the largest logit, so that exp never overflows.
  const double top = *std::max_element(logits, logits + classes);
  double sum = 0;
  for (int64_t i = 0; i < classes; ++i) sum += std::exp(static_cast<double>(logits[i]) - top);
  return top + std::log(sum);
}

bool is_unknown(double confidence, double energy, const UnknownRule& rule) {
  return confidence < rule.threshold || (rule.min_energy && energy < *rule.min_energy);
}

Prediction decide(const float* probabilities, double energy,
                  const std::vector<std::string>& classes, int64_t top_k, const UnknownRule& rule) {
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
  p.energy = energy;
  p.unknown = is_unknown(p.confidence, energy, rule);
  p.label = p.unknown ? kUnknownLabel : p.top_k.front().first;
  return p;
}

}  // namespace tlcore
