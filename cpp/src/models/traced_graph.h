// A model traced once into a TorchScript graph, the common start of every compiled
// precision (inference.cpp) and of int8 calibration (quantize.cpp). Private to models/.
#pragma once

#include <torch/script.h>

#include <cstdint>

#include "tlcore/models/inference.h"

namespace tlcore::models::detail {

struct TracedGraph {
  torch::jit::Module module;  // eval mode, the weights as buffers, not yet frozen
  torch::Tensor example;      // the constant one-image input it was traced with
  // The largest intermediate tensor of one image's run, in float32 bytes.
  int64_t peak_activation_bytes = 0;
};

// The model's `output`, run eagerly.
torch::Tensor run_output(ModelImpl& model, const torch::Tensor& x, InferenceOutput output,
                         int64_t blocks);

// What the model computes for `output` (its logits, embedding or the features
// after `blocks` blocks) on image_size x image_size float inputs.
TracedGraph trace_for_inference(ModelImpl& model, int64_t image_size, InferenceOutput output,
                                int64_t blocks);

}  // namespace tlcore::models::detail
