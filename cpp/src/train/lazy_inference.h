// A model, or its leading frozen blocks, run without autograd as a compiled
// inference graph where one can be made (private to train/).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <utility>

#include "tlcore/models/inference.h"
#include "tlcore/models/model.h"

namespace tlcore::detail {

// Compiles lazily for the first batch's size; batches of another size run eagerly.
class LazyInference {
 public:
  // `model` must be owned by a shared_ptr (every models::Model is). With kFeatures,
  // `blocks` leading blocks run.
  LazyInference(models::ModelImpl& model, models::InferenceOutput output, std::int64_t blocks = 0,
                models::Precision precision = models::Precision::kFloat32,
                models::Int8Calibration int8 = {})
      : model_(model), output_(output), blocks_(blocks), precision_(precision),
        int8_(std::move(int8)) {}

  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor forward_eager(const torch::Tensor& x);

  models::ModelImpl& model_;
  models::InferenceOutput output_;
  std::int64_t blocks_;
  models::Precision precision_;
  models::Int8Calibration int8_;
  std::optional<models::InferenceModel> compiled_;
  bool failed_ = false;
};

// How many leading blocks are frozen and can be cut off as a prefix.
std::int64_t frozen_prefix(const models::ModelImpl& model);

}  // namespace tlcore::detail
