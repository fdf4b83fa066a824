// Classification metrics with scikit-learn's definitions (classification_report,
// confusion_matrix, top_k_accuracy_score), zero_division = 0.
#pragma once

#include <cstdint>
#include <vector>

namespace tlcore {

struct ClassScores {
  double precision = 0;
  double recall = 0;
  double f1 = 0;
  std::int64_t support = 0;  // true samples of the class
};

struct ClassificationReport {
  std::int64_t num_classes = 0;
  std::int64_t num_samples = 0;
  double accuracy = 0;
  // confusion[t * num_classes + p]: samples of true class t predicted as p.
  std::vector<std::int64_t> confusion;
  std::vector<ClassScores> per_class;
  ClassScores macro;     // unweighted mean over classes (support = total)
  ClassScores weighted;  // mean weighted by support (support = total)
};

// Labels must lie in [0, num_classes); throws InvalidArgument otherwise or on a size mismatch.
ClassificationReport classification_report(const std::vector<std::int64_t>& y_true,
                                           const std::vector<std::int64_t>& y_pred,
                                           std::int64_t num_classes);

// Fraction of rows whose true label is among the k highest scores. `scores` is
// row-major n x num_classes; ties are broken toward the lower class index.
double top_k_accuracy(const float* scores, std::int64_t n, std::int64_t num_classes,
                      const std::vector<std::int64_t>& y_true, std::int64_t k);

}  // namespace tlcore
