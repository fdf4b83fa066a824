// One bind_* function per concept, each defined in its own file.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <opencv2/core/mat.hpp>

namespace tlcore::bindings {

// HxW, HxWx1 or HxWx3 uint8 (any strides) copied into a cv::Mat.
cv::Mat to_mat(const pybind11::array& array);

void bind_core(pybind11::module_& m);
void bind_data(pybind11::module_& m);
void bind_augment(pybind11::module_& m);
void bind_loader(pybind11::module_& m);
void bind_metrics(pybind11::module_& m);
void bind_models(pybind11::module_& m);
void bind_train(pybind11::module_& m);
void bind_distributed(pybind11::module_& m);
void bind_infer(pybind11::module_& m);
void bind_spec(pybind11::module_& m);

}  // namespace tlcore::bindings
