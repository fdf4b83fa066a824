// Post-training static int8 quantization of a traced float graph, with TorchScript's
// graph-mode passes (the C++ behind torch.ao.quantization.quantize_jit) driven from
// C++ with tlcore's own observers: weights per channel, symmetric, from their range;
// activations per tensor, from a histogram of calibration images, clipped where
// that minimises the squared quantization error. Private to models/.
#pragma once

#include <torch/script.h>

#include <vector>

#include "tlcore/models/precision.h"

namespace tlcore::models::detail {

// A frozen copy of `traced` (BatchNorm folded into the convolutions) with an
// observer on every value the quantized graph will need a scale for; with
// `float_first_conv`, the first convolution stays in float32.
torch::jit::Module observe_for_int8(const torch::jit::Module& traced, bool float_first_conv);

// Runs `batches` through `observed` twice (ranges, then histograms) and chooses
// each activation's scale and zero point.
Int8Calibration calibrate_observed(torch::jit::Module& observed,
                                   const std::vector<torch::Tensor>& batches, int64_t image_size);

// The quantized graph: `observed` with `calibration`'s activation parameters, its
// weights quantized from their own range, its output_offset added to what it returns.
// FormatError when the calibration was made for another graph.
torch::jit::Module convert_to_int8(torch::jit::Module observed, const Int8Calibration& calibration,
                                   const torch::Tensor& example);

}  // namespace tlcore::models::detail
