#include "bindings.h"
#include "tlcore/threads.h"

namespace py = pybind11;

namespace tlcore::bindings {

void bind_core(py::module_& m) {
  m.def("available_cores", &available_cores, "Cores this process may run on.");
  m.def("num_threads", &num_threads, "Threads tlcore computes on.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Sets torch's intra-op threads and the loader's default; n <= 0 means all cores.");
}

}  // namespace tlcore::bindings
