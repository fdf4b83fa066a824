#include <pybind11/stl.h>
#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/train/distributed.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

// Drops a Python reference from a thread that may not hold the GIL.
void drop_reference(py::object& object) {
  if (!Py_IsInitialized()) {
    object.release();  // the interpreter is gone: nothing left to free it with
    return;
  }
  py::gil_scoped_acquire gil;
  object = py::object();
}

// The trainer calls collectives from C++ threads that do not hold the GIL; these
// forward them to a Python object whose all_reduce(tensor) and broadcast(tensor,
// root) return torch.distributed work handles (tlcore.distributed._TorchCollectives).
class PythonWork : public ProcessGroup::Pending {
 public:
  PythonWork(ProcessGroup& group, py::object work, std::string what)
      : group_(group), work_(std::move(work)), what_(std::move(what)) {}
  ~PythonWork() override { drop_reference(work_); }
  void wait() override {
    py::gil_scoped_acquire gil;
    try {
      work_.attr("wait")();
    } catch (py::error_already_set& e) {
      group_.fail(what_, py::str(e.value()));
    }
  }

 private:
  ProcessGroup& group_;
  py::object work_;
  std::string what_;
};

class TorchDistributedGroup : public ProcessGroup {
 public:
  TorchDistributedGroup(py::object collectives, int rank, int world_size, double timeout_s,
                        std::string backend)
      : collectives_(std::move(collectives)),
        rank_(rank),
        world_size_(world_size),
        timeout_s_(timeout_s),
        backend_(std::move(backend)) {}
  ~TorchDistributedGroup() override { drop_reference(collectives_); }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  double timeout_s() const override { return timeout_s_; }
  std::string backend() const override { return backend_; }

  std::unique_ptr<Pending> all_reduce_sum_async(at::Tensor& tensor,
                                                const std::string& what) override {
    py::gil_scoped_acquire gil;
    try {
      return std::make_unique<PythonWork>(*this, collectives_.attr("all_reduce")(tensor), what);
    } catch (py::error_already_set& e) {
      fail(what, py::str(e.value()));
    }
  }

  void broadcast(at::Tensor& tensor, int root, const std::string& what) override {
    py::gil_scoped_acquire gil;
    try {
      PythonWork(*this, collectives_.attr("broadcast")(tensor, root), what).wait();
    } catch (py::error_already_set& e) {
      fail(what, py::str(e.value()));
    }
  }

 private:
  py::object collectives_;
  int rank_, world_size_;
  double timeout_s_;
  std::string backend_;
};

}  // namespace

void bind_distributed(py::module_& m) {
  py::class_<ProcessGroup, std::shared_ptr<ProcessGroup>>(
      m, "ProcessGroup", "One rank's membership of a torch.distributed process group.")
      .def_static(
          "from_environment",
          [] {
            py::gil_scoped_release release;
            return ProcessGroup::from_environment();
          },
          "tlcore's Gloo group from MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (None when "
          "WORLD_SIZE is unset or 1).")
      .def_property_readonly("rank", &ProcessGroup::rank)
      .def_property_readonly("world_size", &ProcessGroup::world_size)
      .def_property_readonly("timeout_s", &ProcessGroup::timeout_s)
      .def_property_readonly("backend", &ProcessGroup::backend)
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

  py::class_<GlooProcessGroup, ProcessGroup, std::shared_ptr<GlooProcessGroup>>(
      m, "GlooProcessGroup", "torch.distributed's Gloo process group, joined from C++.")
      .def(py::init([](const std::string& master_addr, int master_port, int rank, int world_size,
                       double timeout_s) {
             DistributedOptions o;
             o.master_addr = master_addr;
             o.master_port = master_port;
             o.rank = rank;
             o.world_size = world_size;
             o.timeout_s = timeout_s;
             py::gil_scoped_release release;  // joining waits for the other ranks
             return std::make_shared<GlooProcessGroup>(o);
           }),
           py::arg("master_addr"), py::arg("master_port"), py::arg("rank"), py::arg("world_size"),
           py::arg("timeout_s") = 300.0)
      .def_static("available", &GlooProcessGroup::available,
                  "Whether this tlcore was built with Gloo's headers.");

  py::class_<TorchDistributedGroup, ProcessGroup, std::shared_ptr<TorchDistributedGroup>>(
      m, "TorchDistributedGroup",
      "A process group made with torch.distributed (NCCL, Gloo, ...), its collectives run "
      "through Python.")
      .def(py::init<py::object, int, int, double, std::string>(), py::arg("collectives"),
           py::arg("rank"), py::arg("world_size"), py::arg("timeout_s"), py::arg("backend"));
}

}  // namespace tlcore::bindings
