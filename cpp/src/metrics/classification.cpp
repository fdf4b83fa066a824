#include "tlcore/metrics/classification.h"

#include <string>

#include "tlcore/error.h"

namespace tlcore {
namespace {

double safe_div(double a, double b) { return b == 0 ? 0.0 : a / b; }

void check_label(std::int64_t y, std::int64_t num_classes, const char* what) {
  if (y < 0 || y >= num_classes)
    throw InvalidArgument(std::string("classification_report: ") + what + " label " +
                          std::to_string(y) + " outside [0, " + std::to_string(num_classes) + ")");
}

}  // namespace

ClassificationReport classification_report(const std::vector<std::int64_t>& y_true,
                                           const std::vector<std::int64_t>& y_pred,
                                           std::int64_t num_classes) {
  if (y_true.size() != y_pred.size())
    throw InvalidArgument("classification_report: " + std::to_string(y_true.size()) +
                          " true labels but " + std::to_string(y_pred.size()) + " predictions");
  if (num_classes <= 0) throw InvalidArgument("classification_report: num_classes must be > 0");
  ClassificationReport r;
  r.num_classes = num_classes;
  r.num_samples = static_cast<std::int64_t>(y_true.size());
  const auto k = static_cast<std::size_t>(num_classes);
  r.confusion.assign(k * k, 0);
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < y_true.size(); ++i) {
    check_label(y_true[i], num_classes, "true");
    check_label(y_pred[i], num_classes, "predicted");
    ++r.confusion[static_cast<std::size_t>(y_true[i]) * k + static_cast<std::size_t>(y_pred[i])];
    correct += y_true[i] == y_pred[i];
  }
  r.accuracy = safe_div(double(correct), double(r.num_samples));
  r.per_class.resize(k);
  for (std::size_t c = 0; c < k; ++c) {
    std::int64_t predicted = 0, actual = 0;
    for (std::size_t j = 0; j < k; ++j) {
      predicted += r.confusion[j * k + c];
      actual += r.confusion[c * k + j];
    }
    const double tp = double(r.confusion[c * k + c]);
    ClassScores& s = r.per_class[c];
    s.precision = safe_div(tp, double(predicted));
    s.recall = safe_div(tp, double(actual));
    s.f1 = safe_div(2 * s.precision * s.recall, s.precision + s.recall);
    s.support = actual;
    r.macro.precision += s.precision / double(k);
    r.macro.recall += s.recall / double(k);
    r.macro.f1 += s.f1 / double(k);
    const double w = safe_div(double(actual), double(r.num_samples));
    r.weighted.precision += s.precision * w;
    r.weighted.recall += s.recall * w;
    r.weighted.f1 += s.f1 * w;
  }
  r.macro.support = r.weighted.support = r.num_samples;
  return r;
}

double top_k_accuracy(const float* scores, std::int64_t n, std::int64_t num_classes,
                      const std::vector<std::int64_t>& y_true, std::int64_t k) {
  if (static_cast<std::int64_t>(y_true.size()) != n)
    throw InvalidArgument("top_k_accuracy: " + std::to_string(n) + " score rows but " +
                          std::to_string(y_true.size()) + " labels");
  if (k < 1) throw InvalidArgument("top_k_accuracy: k must be >= 1");
  std::int64_t hits = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float* row = scores + i * num_classes;
    const std::int64_t t = y_true[static_cast<std::size_t>(i)];
    check_label(t, num_classes, "true");
    // Rank of the true class: classes scoring higher, or equal with a lower index, come first.
    std::int64_t ahead = 0;
    for (std::int64_t c = 0; c < num_classes; ++c)
      ahead += row[c] > row[t] || (row[c] == row[t] && c < t);
    hits += ahead < k;
  }
  return n == 0 ? 0.0 : double(hits) / double(n);
}

}  // namespace tlcore
