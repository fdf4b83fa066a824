#include <pybind11/stl.h>
#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/infer/predictor.h"

namespace py = pybind11;

namespace tlcore::bindings {

void bind_infer(py::module_& m) {
  py::class_<PredictorOptions>(m, "PredictorOptions")
      .def(py::init<>())
      .def_readwrite("max_batch", &PredictorOptions::max_batch)
      .def_readwrite("max_delay_ms", &PredictorOptions::max_delay_ms)
      .def_readwrite("max_queue", &PredictorOptions::max_queue)
      .def_readwrite("max_pixels", &PredictorOptions::max_pixels)
      .def_readwrite("device", &PredictorOptions::device);

  py::class_<Predictor>(m, "Predictor",
                        "Thread-safe predictions with dynamic batching of concurrent requests.")
      .def(py::init<std::shared_ptr<models::ModelImpl>, std::shared_ptr<const Pipeline>,
                    PredictorOptions>(),
           py::arg("model"), py::arg("pipeline"), py::arg("options") = PredictorOptions(),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "predict_bytes",
          [](Predictor& self, const py::bytes& data, const std::string& source) {
            const auto view = static_cast<std::string_view>(data);
            py::gil_scoped_release release;
            return self.predict(reinterpret_cast<const std::uint8_t*>(view.data()), view.size(),
                                source);
          },
          py::arg("data"), py::arg("source") = "image",
          "Class probabilities for an encoded image; blocks (GIL released) until its batch ran.")
      .def(
          "predict_array",
          [](Predictor& self, const py::array& image, const std::string& source) {
            const cv::Mat mat = to_mat(image);
            py::gil_scoped_release release;
            return self.predict(mat, source);
          },
          py::arg("image"), py::arg("source") = "image")
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
      .def_property_readonly("device", &Predictor::device);
}

}  // namespace tlcore::bindings
