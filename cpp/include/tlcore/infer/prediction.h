// A prediction as people and programs read it: the top-k labels and the
// "unknown" rule, defined once for tlcore.load, the Predictor, the service and
// tlcore-predict.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tlcore {

struct Prediction {
  std::string label;      // the top class, or kUnknownLabel when the rule says so
  double confidence = 0;  // the top class's (calibrated) probability
  double energy = 0;      // the raw logits' energy score (see energy())
  bool unknown = false;
  std::vector<std::pair<std::string, double>> top_k;  // most probable first
};

inline constexpr const char* kUnknownLabel = "unknown";

// When a prediction is "unknown": its confidence is below `threshold`, or its energy
// is below `min_energy` when that is set. The energy separates images unlike the
// training data far better than the confidence does (benchmarks/unknown.py: AUROC
// 0.88 against 0.81 for a flowers model), so calibration sets that floor.
struct UnknownRule {
  double threshold = 0;              // floor on the calibrated top probability (0: none)
  std::optional<double> min_energy;  // floor on the energy (none: not used)
};

// The energy score of one image's raw logits, logsumexp (Liu et al. 2020, as a
// negative free energy): high for images like the training data, low for others.
double energy(const float* logits, int64_t classes);

bool is_unknown(double confidence, double energy, const UnknownRule& rule);

// One image's answer from its class probabilities and energy: the top-k labels
// (ties rank the lower class index first; top_k is clamped to [1, classes]) and
// the unknown rule.
Prediction decide(const float* probabilities, double energy,
                  const std::vector<std::string>& classes, int64_t top_k, const UnknownRule& rule);

}  // namespace tlcore
