// A model's predictions over one epoch of a loader, for reports and validation.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <ATen/core/Tensor.h>

#include "tlcore/loader.h"
#include "tlcore/models/model.h"
#include "tlcore/models/precision.h"

namespace tlcore {

struct Predictions {
  at::Tensor logits;   // N x classes, float32
  at::Tensor labels;   // N, int64
  at::Tensor indices;  // N, int64: dataset indices
  double loss = 0;     // mean cross-entropy
};

// Called after every batch with (batch, batches, running mean loss).
using BatchCallback = std::function<void(std::int64_t, std::int64_t, double)>;

// Runs `model` in eval mode without autograd over one epoch of `loader`
// (which should not shuffle for reports). `flip_tta` averages with the
// horizontally flipped batch's softmax (logits are then log-probabilities).
// `compiled` runs a compiled snapshot (models::InferenceModel) of the model on
// CPU, in `precision` (int8 needs `int8`; bf16 amp on the CPU also compiles in bf16).
// It runs where the model's parameters are; `amp` as in FitOptions.
Predictions predict(models::Model model, Loader& loader, bool channels_last = true,
                    bool flip_tta = false, const BatchCallback& on_batch = nullptr,
                    bool compiled = true, const std::string& amp = "off",
                    models::Precision precision = models::Precision::kFloat32,
                    const models::Int8Calibration& int8 = {});

}  // namespace tlcore
