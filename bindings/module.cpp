// The private extension module tlcore._core. Each concept binds itself in its
// own file; this one only wires them together and maps the error hierarchy.
#include <pybind11/pybind11.h>

#include <cstdlib>

#include "bindings.h"
#include "tlcore/error.h"
#include "tlcore/threads.h"
#include "tlcore/train/distributed.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "tlcore's C++ core (private: use the tlcore package).";
  m.attr("__version__") = TLCORE_VERSION;

  // Most specific first: pybind11 tries translators in reverse registration order,
  // but register_exception_translator below handles the hierarchy explicitly.
  static py::exception<tlcore::Unsupported> unsupported(m, "Unsupported", PyExc_RuntimeError);
  static py::exception<tlcore::Overloaded> overloaded(m, "Overloaded", PyExc_RuntimeError);
  static py::exception<tlcore::DistributedError> distributed(m, "DistributedError",
                                                             PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const tlcore::NotFound& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    } catch (const tlcore::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const tlcore::Unsupported& e) {
      unsupported(e.what());
    } catch (const tlcore::Overloaded& e) {
      overloaded(e.what());
    } catch (const tlcore::DistributedError& e) {
      distributed(e.what());
    } catch (const tlcore::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  // torch may start with a single intra-op thread; TLCORE_NUM_THREADS overrides the default.
  const char* env = std::getenv("TLCORE_NUM_THREADS");
  tlcore::set_num_threads(env ? std::atoi(env) : 0);

  tlcore::bindings::bind_core(m);
  tlcore::bindings::bind_data(m);
  tlcore::bindings::bind_augment(m);
  tlcore::bindings::bind_loader(m);
  tlcore::bindings::bind_metrics(m);
  tlcore::bindings::bind_models(m);
  tlcore::bindings::bind_train(m);
  tlcore::bindings::bind_distributed(m);
  tlcore::bindings::bind_spec(m);
  tlcore::bindings::bind_infer(m);
}
