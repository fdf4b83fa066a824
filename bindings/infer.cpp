#include <pybind11/stl.h>
#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/infer/predictor.h"
#include "tlcore/infer/scores.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

std::pair<at::Tensor, at::Tensor> as_tuple(Scores s) {
  return {std::move(s.probabilities), std::move(s.energy)};
}

}  // namespace

void bind_infer(py::module_& m) {
  py::class_<PredictorOptions>(m, "PredictorOptions")
      .def(py::init<>())
      .def_readwrite("max_batch", &PredictorOptions::max_batch)
      .def_readwrite("max_delay_ms", &PredictorOptions::max_delay_ms)
      .def_readwrite("max_queue", &PredictorOptions::max_queue)
      .def_readwrite("max_pixels", &PredictorOptions::max_pixels)
      .def_readwrite("device", &PredictorOptions::device)
      .def_readwrite("precision", &PredictorOptions::precision);

  py::class_<Predictor>(m, "Predictor",
                        "Thread-safe predictions with dynamic batching of concurrent requests.")
      .def(py::init<std::shared_ptr<models::ModelImpl>, models::ModelSpec, PredictorOptions>(),
           py::arg("model"), py::arg("spec"), py::arg("options") = PredictorOptions(),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "predict_bytes",
          [](Predictor& self, const py::bytes& data, const std::string& source) {
            const auto view = static_cast<std::string_view>(data);
            py::gil_scoped_release release;
            return as_tuple(self.predict(reinterpret_cast<const std::uint8_t*>(view.data()),
                                         view.size(), source));
          },
          py::arg("data"), py::arg("source") = "image",
          "(class probabilities, energy) of an encoded image; blocks (GIL released) until its "
          "batch ran.")
      .def(
          "predict_array",
          [](Predictor& self, const py::array& image, const std::string& source) {
            const cv::Mat mat = to_mat(image);
            py::gil_scoped_release release;
            return as_tuple(self.predict(mat, source));
          },
          py::arg("image"), py::arg("source") = "image")
      .def(
          "predict_many",
          [](Predictor& self, const py::list& images, const std::vector<std::string>& sources) {
            // Bytes stay owned by their Python objects, which `images` keeps alive.
            std::vector<PredictorInput> inputs(images.size());
            for (std::size_t i = 0; i < inputs.size(); ++i) {
              inputs[i].source = i < sources.size() ? sources[i] : "image " + std::to_string(i);
              const py::handle item = images[i];
              if (py::isinstance<py::bytes>(item)) {
                char* data = nullptr;
                py::ssize_t size = 0;
                PyBytes_AsStringAndSize(item.ptr(), &data, &size);
                inputs[i].data = reinterpret_cast<const std::uint8_t*>(data);
                inputs[i].size = static_cast<std::size_t>(size);
              } else {
                inputs[i].image = to_mat(item.cast<py::array>());
              }
            }
            py::gil_scoped_release release;
            return as_tuple(self.predict_many(inputs));
          },
          py::arg("images"), py::arg("sources") = std::vector<std::string>{},
          "(N x classes probabilities, N energies) of encoded bytes or uint8 arrays, batched "
          "together.")
      .def("stats",
           [](const Predictor& self) {
             const auto s = self.stats();
             py::dict sizes;
             for (const auto& [size, count] : s.batch_sizes)
               sizes[py::str(std::to_string(size))] = count;
             py::dict d;
             d["requests"] = s.requests;
             d["rejected"] = s.rejected;
             d["batches"] = s.batches;
             d["queue_depth"] = s.queue_depth;
             d["batch_sizes"] = sizes;
             d["max_batch"] = self.options().max_batch;
             d["max_delay_ms"] = self.options().max_delay_ms;
             d["max_queue"] = self.options().max_queue;
             d["device"] = self.device();
             return d;
           })
      .def_property_readonly("device", &Predictor::device)
      .def_property_readonly("precision", &Predictor::precision)
      .def_property_readonly("precision_note", &Predictor::precision_note)
      .def_property_readonly("spec", &Predictor::spec);
  m.def(
      "is_unknown",
      [](const at::Tensor& confidence, const at::Tensor& energy, double threshold,
         std::optional<double> min_energy) {
        return unknown_mask(confidence, energy, {threshold, min_energy});
      },
      py::arg("confidence"), py::arg("energy"), py::arg("threshold"), py::arg("min_energy"),
      "The 'unknown' rule over many images: a bool per image.");
  m.def(
      "scores",
      [](const at::Tensor& logits, double temperature) {
        return as_tuple(scores_of(logits, temperature));
      },
      py::arg("logits"), py::arg("temperature"),
      "(probabilities, energies) of raw logits: softmax(logits / temperature) and logsumexp.");
}

}  // namespace tlcore::bindings
