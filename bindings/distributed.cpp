#include <pybind11/stl.h>
#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/train/distributed.h"

namespace py = pybind11;

namespace tlcore::bindings {

void bind_distributed(py::module_& m) {
  py::class_<ProcessGroup, std::shared_ptr<ProcessGroup>>(
      m, "ProcessGroup", "One rank's membership of a torch.distributed (Gloo) process group.")
      .def(py::init([](const std::string& master_addr, int master_port, int rank, int world_size,
                       double timeout_s) {
             DistributedOptions o;
             o.master_addr = master_addr;
             o.master_port = master_port;
             o.rank = rank;
             o.world_size = world_size;
             o.timeout_s = timeout_s;
             py::gil_scoped_release release;  // joining waits for the other ranks
             return std::make_shared<ProcessGroup>(o);
           }),
           py::arg("master_addr"), py::arg("master_port"), py::arg("rank"), py::arg("world_size"),
           py::arg("timeout_s") = 300.0)
      .def_static(
          "from_environment",
          [] {
            py::gil_scoped_release release;
            return ProcessGroup::from_environment();
          },
          "From MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (None when WORLD_SIZE is unset or 1).")
      .def_property_readonly("rank", &ProcessGroup::rank)
      .def_property_readonly("world_size", &ProcessGroup::world_size)
      .def_property_readonly("timeout_s", &ProcessGroup::timeout_s)
      .def(
          "all_reduce_sum",
          [](ProcessGroup& g, at::Tensor tensor) {
            py::gil_scoped_release release;
            auto t = tensor.contiguous();
            g.all_reduce_sum(t, "all_reduce_sum");
            return t;
          },
          py::arg("tensor"), "The element-wise sum over all ranks (a new tensor).")
      .def("barrier", [](ProcessGroup& g) {
        py::gil_scoped_release release;
        g.barrier("barrier");
      });
}

}  // namespace tlcore::bindings
