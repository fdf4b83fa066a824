#include <pybind11/stl.h>
#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/error.h"
#include "tlcore/metrics/classification.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

py::dict scores_dict(const ClassScores& s) {
  py::dict d;
  d["precision"] = s.precision;
  d["recall"] = s.recall;
  d["f1"] = s.f1;
  d["support"] = s.support;
  return d;
}

}  // namespace

void bind_metrics(py::module_& m) {
  m.def(
      "classification_report",
      [](const std::vector<std::int64_t>& y_true, const std::vector<std::int64_t>& y_pred,
         std::int64_t num_classes) {
        const ClassificationReport r = classification_report(y_true, y_pred, num_classes);
        py::dict d;
        d["accuracy"] = r.accuracy;
        d["num_samples"] = r.num_samples;
        py::list per_class;
        for (const auto& s : r.per_class) per_class.append(scores_dict(s));
        d["per_class"] = per_class;
        d["macro"] = scores_dict(r.macro);
        d["weighted"] = scores_dict(r.weighted);
        d["confusion"] = torch::tensor(r.confusion).view({r.num_classes, r.num_classes});
        return d;
      },
      py::arg("y_true"), py::arg("y_pred"), py::arg("num_classes"),
      "Accuracy, per-class/macro/weighted precision, recall, F1 and the confusion matrix.");
  m.def(
      "top_k_accuracy",
      [](const torch::Tensor& scores, const std::vector<std::int64_t>& y_true, std::int64_t k) {
        if (scores.dim() != 2)
          throw InvalidArgument("top_k_accuracy: scores must be 2-D (n x classes)");
        const auto s = scores.to(torch::kFloat).contiguous();
        return top_k_accuracy(s.data_ptr<float>(), s.size(0), s.size(1), y_true, k);
      },
      py::arg("scores"), py::arg("y_true"), py::arg("k"));
}

}  // namespace tlcore::bindings
