#include <pybind11/stl.h>
#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/error.h"
#include "tlcore/infer/prediction.h"
#include "tlcore/models/model_file.h"
#include "tlcore/models/spec.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

using models::ModelSpec;
using Release = py::call_guard<py::gil_scoped_release>;

py::dict state_dict(const models::StateDict& state) {
  py::dict d;
  for (const auto& [name, tensor] : state) d[py::str(name)] = tensor;
  return d;
}

}  // namespace

void bind_spec(py::module_& m) {
  m.attr("MODEL_FORMAT") = models::kModelFormat;
  m.attr("UNKNOWN_LABEL") = kUnknownLabel;

  py::class_<models::HeadSpec>(m, "HeadSpec")
      .def(py::init<>())
      .def_readwrite("kind", &models::HeadSpec::kind)
      .def_readwrite("dropout", &models::HeadSpec::dropout)
      .def_readwrite("hidden", &models::HeadSpec::hidden);

  py::class_<models::Provenance>(m, "Provenance")
      .def(py::init<>())
      .def_readwrite("tlcore_version", &models::Provenance::tlcore_version)
      .def_readwrite("created", &models::Provenance::created)
      .def_readwrite("data_source", &models::Provenance::data_source)
      .def_readwrite("data_size", &models::Provenance::data_size);

  py::class_<models::ModelOptions>(m, "ModelOptions")
      .def(py::init<>())
      .def_property(
          "in_channels", [](const models::ModelOptions& o) { return o.in_channels(); },
          [](models::ModelOptions& o, int64_t v) { o.in_channels(v); })
      .def_property(
          "input_size", [](const models::ModelOptions& o) { return o.input_size(); },
          [](models::ModelOptions& o, int64_t v) { o.input_size(v); })
      .def_property(
          "widths", [](const models::ModelOptions& o) { return o.widths(); },
          [](models::ModelOptions& o, std::vector<int64_t> v) { o.widths(std::move(v)); })
      .def_property(
          "depths", [](const models::ModelOptions& o) { return o.depths(); },
          [](models::ModelOptions& o, std::vector<int64_t> v) { o.depths(std::move(v)); })
      .def_property(
          "dropout", [](const models::ModelOptions& o) { return o.dropout(); },
          [](models::ModelOptions& o, double v) { o.dropout(v); });

  py::class_<ModelSpec>(m, "ModelSpec", "What a saved model is, apart from its weights.")
      .def(py::init<>())
      .def_readwrite("arch", &ModelSpec::arch)
      .def_readwrite("weights", &ModelSpec::weights)
      .def_readwrite("classes", &ModelSpec::classes)
      .def_readwrite("head", &ModelSpec::head)
      .def_readwrite("options", &ModelSpec::options)
      .def_property(
          "pipeline",
          [](const ModelSpec& s) { return std::const_pointer_cast<Pipeline>(s.pipeline); },
          [](ModelSpec& s, std::shared_ptr<Pipeline> p) { s.pipeline = std::move(p); })
      .def_readwrite("threshold", &ModelSpec::threshold)
      .def_readwrite("min_energy", &ModelSpec::min_energy)
      .def_readwrite("temperature", &ModelSpec::temperature)
      .def_readwrite("int8", &ModelSpec::int8)
      .def_readwrite("provenance", &ModelSpec::provenance)
      .def_readwrite("recipe", &ModelSpec::recipe)
      .def_readwrite("history", &ModelSpec::history)
      .def_readwrite("metrics", &ModelSpec::metrics)
      .def("to_json", &models::spec_to_text, "The spec as JSON text (the file's \"spec\" entry).")
      .def_static("from_json", &models::spec_from_text, py::arg("text"),
                  py::arg("source") = "spec");

  m.def(
      "build_model", [](const ModelSpec& spec) { return models::build_model(spec).ptr(); },
      py::arg("spec"), Release(), "The spec's architecture and head, freshly initialised.");
  m.def(
      "read_model_file",
      [](const std::string& path) {
        models::ModelFile file;
        {
          py::gil_scoped_release release;
          file = models::read_model_file(path);
        }
        return py::make_tuple(file.spec, state_dict(file.state));
      },
      py::arg("path"), "(spec, state dict) of a .tlc file, read without running pickled code.");
  m.def(
      "load_model",
      [](const std::string& path) {
        auto loaded = models::load_model(path);
        return std::make_pair(loaded.spec, loaded.model.ptr());
      },
      py::arg("path"), Release(), "(spec, model in eval mode) of a .tlc file.");

  py::class_<Prediction>(m, "Prediction")
      .def_readonly("label", &Prediction::label)
      .def_readonly("confidence", &Prediction::confidence)
      .def_readonly("energy", &Prediction::energy)
      .def_readonly("unknown", &Prediction::unknown)
      .def_readonly("top_k", &Prediction::top_k);
  m.def(
      "decide",
      [](const at::Tensor& probabilities, double energy, const std::vector<std::string>& classes,
         int64_t top_k, double threshold, std::optional<double> min_energy) {
        const auto p = probabilities.to(at::kFloat).contiguous();
        if (p.dim() != 1 || p.numel() != static_cast<int64_t>(classes.size()))
          throw InvalidArgument("decide: expected one probability per class");
        return decide(p.data_ptr<float>(), energy, classes, top_k, {threshold, min_energy});
      },
      py::arg("probabilities"), py::arg("energy"), py::arg("classes"), py::arg("top_k"),
      py::arg("threshold"), py::arg("min_energy"),
      "Top-k labels and the 'unknown' rule for one image's probabilities and energy.");
}

}  // namespace tlcore::bindings
