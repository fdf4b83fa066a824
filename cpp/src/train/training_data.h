// What a fit learns and validates from, as the trainable part of the model sees
// it (private to train/): either the loader's batches, run through the frozen
// leading blocks on the way (loader_batches.h), or features of the frozen part
// computed once (feature_cache.h). train_one_epoch and evaluate do not know which.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>

#include "tlcore/train/trainer.h"

namespace tlcore::detail {

struct TrainingBatch {
  torch::Tensor input;   // what forward() takes: images, or cached features
  torch::Tensor labels;  // int64, on any device
};

class TrainingData {
 public:
  virtual ~TrainingData() = default;

  // Starts loader epoch `epoch` (FitOptions::epoch_offset included).
  virtual void start_epoch(std::int64_t epoch) = 0;
  // The epoch's next batch, in the loader's order; nullopt at the end.
  virtual std::optional<TrainingBatch> next() = 0;
  // Logits of the model for a batch's input, under autograd for what trains.
  virtual torch::Tensor forward(const torch::Tensor& input) = 0;
  // Logits and labels of every validation sample (over all ranks, each once) and
  // their mean cross-entropy, computed in eval mode without autograd.
  virtual Predictions validate() = 0;
  // Where cached rows came from (FitResult::feature_cache); "" without a cache.
  virtual std::string cache_report() const { return {}; }
};

}  // namespace tlcore::detail
