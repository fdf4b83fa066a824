// One bind_* function per concept, each defined in its own file.
#pragma once

#include <pybind11/pybind11.h>

namespace tlcore::bindings {

void bind_core(pybind11::module_& m);
void bind_data(pybind11::module_& m);
void bind_augment(pybind11::module_& m);
void bind_loader(pybind11::module_& m);
void bind_metrics(pybind11::module_& m);
void bind_models(pybind11::module_& m);
void bind_train(pybind11::module_& m);

}  // namespace tlcore::bindings
