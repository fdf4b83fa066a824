#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/loader.h"

namespace py = pybind11;

namespace tlcore::bindings {

void bind_loader(py::module_& m) {
  py::class_<Loader, std::shared_ptr<Loader>>(m, "Loader")
      .def(py::init([](std::shared_ptr<Dataset> dataset, std::shared_ptr<Pipeline> pipeline,
                       std::int64_t batch_size, bool shuffle, bool drop_last, std::uint64_t seed,
                       int num_workers, int prefetch, bool uint8_output, bool pin_memory,
                       bool skip_corrupt, int rank, int world_size, std::int64_t shuffle_buffer) {
             LoaderOptions o;
             o.batch_size = batch_size;
             o.shuffle = shuffle;
             o.drop_last = drop_last;
             o.seed = seed;
             o.num_workers = num_workers;
             o.prefetch = prefetch;
             o.uint8_output = uint8_output;
             o.pin_memory = pin_memory;
             o.skip_corrupt = skip_corrupt;
             o.rank = rank;
             o.world_size = world_size;
             o.shuffle_buffer = shuffle_buffer;
             return std::make_shared<Loader>(std::move(dataset), std::move(pipeline), o);
           }),
           py::arg("dataset"), py::arg("pipeline"), py::arg("batch_size") = 32,
           py::arg("shuffle") = true, py::arg("drop_last") = false, py::arg("seed") = 0,
           py::arg("num_workers") = 0, py::arg("prefetch") = 2, py::arg("uint8_output") = false,
           py::arg("pin_memory") = false, py::arg("skip_corrupt") = false, py::arg("rank") = 0,
           py::arg("world_size") = 1, py::arg("shuffle_buffer") = LoaderOptions{}.shuffle_buffer)
      .def("start_epoch", &Loader::start_epoch, py::arg("epoch"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "next",
          [](Loader& self) -> py::object {
            std::optional<Batch> batch;
            {
              py::gil_scoped_release release;
              batch = self.next();
            }
            if (!batch) return py::none();
            return py::make_tuple(batch->images, batch->labels, batch->indices);
          },
          "Next (images, labels, indices) of the epoch, or None at its end.")
      .def("epoch_indices", &Loader::epoch_indices, py::arg("epoch"),
           "The dataset indices epoch `epoch` yields (this rank's shard), without loading.")
      .def("__len__", &Loader::num_batches)
      .def_property_readonly("num_samples", &Loader::num_samples)
      .def_property_readonly("skipped", &Loader::skipped)
      .def_property_readonly("batch_size", [](const Loader& l) { return l.options().batch_size; })
      .def_property_readonly("num_workers",
                             [](const Loader& l) { return l.options().num_workers; });
}

}  // namespace tlcore::bindings
