// int8 post-training static quantization: calibrate once on a few hundred training
// images, save the Int8Calibration with the model (plain numbers: the model file still
// loads without running code), and InferenceModel builds the quantized graph from it.
#pragma once

#include <memory>
#include <vector>

#include "tlcore/models/model.h"
#include "tlcore/models/precision.h"

namespace tlcore::models {

// The scales and zero points of `model`'s activations on `batches` (normalised
// N x C x image_size x image_size float images, as the model's eval pipeline makes
// them). InvalidArgument when there are no batches or one has the wrong shape.
Int8Calibration calibrate_int8(const std::shared_ptr<ModelImpl>& model, int64_t image_size,
                               const std::vector<torch::Tensor>& batches);

}  // namespace tlcore::models
