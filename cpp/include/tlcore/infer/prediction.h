// A prediction as people and programs read it: the top-k labels and the
// "unknown" rule, defined once for tlcore.load, the Predictor, the service and
// tlcore-predict.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tlcore {

struct Prediction {
  std::string label;      // the top class, or kUnknownLabel below the threshold
  double confidence = 0;  // the top class's probability
  bool unknown = false;
  std::vector<std::pair<std::string, double>> top_k;  // most probable first
};

inline constexpr const char* kUnknownLabel = "unknown";

// The rule for one image's class probabilities: "unknown" when the top probability
// is below `threshold`; ties rank the lower class index first. top_k is clamped to
// [1, classes].
Prediction decide(const float* probabilities, const std::vector<std::string>& classes,
                  int64_t top_k, double threshold);

}  // namespace tlcore
