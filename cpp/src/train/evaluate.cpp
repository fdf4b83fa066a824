#include "evaluate.h"

#include <torch/torch.h>

#include <vector>

#include "tlcore/metrics/classification.h"

namespace tlcore::detail {
namespace {

std::vector<std::int64_t> to_vector(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return {c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel()};
}

}  // namespace

ValidationScores score(const Predictions& p, std::int64_t num_classes) {
  const auto report =
      classification_report(to_vector(p.labels), to_vector(p.logits.argmax(1)), num_classes);
  return {p.loss, report.accuracy, report.macro.f1};
}

ValidationScores evaluate(TrainingData& data, std::int64_t num_classes) {
  return score(data.validate(), num_classes);
}

Predictions gather_predictions(ProcessGroup& group, const Predictions& p) {
  const auto logits = group.gather_rows(p.logits.cpu(), "gathering validation logits");
  const auto labels = group.gather_rows(p.labels.cpu(), "gathering validation labels");
  const auto indices =
      group.gather_rows(p.indices.cpu(), "gathering validation indices").contiguous();
  std::vector<std::int64_t> keep;
  std::vector<bool> seen;
  const auto* idx = indices.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < indices.size(0); ++i) {
    const auto k = static_cast<std::size_t>(idx[i]);
    if (k >= seen.size()) seen.resize(k + 1, false);
    if (seen[k]) continue;
    seen[k] = true;
    keep.push_back(i);
  }
  const auto rows = torch::tensor(keep, torch::kLong);
  Predictions all;
  all.logits = logits.index_select(0, rows);
  all.labels = labels.index_select(0, rows);
  all.indices = indices.index_select(0, rows);
  all.loss = torch::nn::functional::cross_entropy(all.logits, all.labels).item<double>();
  return all;
}

}  // namespace tlcore::detail
