// One epoch of training steps (private to train/).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "data_parallel.h"
#include "mixed_precision.h"
#include "optimizer.h"
#include "tlcore/train/schedule.h"
#include "tlcore/train/trainer.h"
#include "training_data.h"

namespace tlcore::detail {

// What every training step of a fit uses.
struct Optimization {
  OptimizerWithGroups& optimizer;
  torch::nn::functional::CrossEntropyFuncOptions loss;
  ScheduleOptions schedule;
  double clip_grad_norm = 0;  // 0: off
  Amp amp;
  LossScaler& scaler;
  DataParallel& parallel;
  torch::Device device;
  std::int64_t steps_per_epoch = 0;
  std::int64_t total_steps = 0;  // of the whole fit, for the schedule
};

// Training metrics of one epoch, over all ranks.
struct TrainMetrics {
  double loss = 0;      // mean cross-entropy of the batches as they were trained
  double accuracy = 0;  // of the same forward passes
  double samples = 0;
  double lr = 0;  // the head's rate at the end of the epoch
};

// Trains `model` for epoch `epoch` of the fit (from 0), on loader epoch
// `loader_epoch` of `data`. Dropout draws are seeded from (seed, loader_epoch).
TrainMetrics train_one_epoch(models::ModelImpl& model, TrainingData& data, Optimization& opt,
                             std::int64_t epoch, std::int64_t loader_epoch, std::uint64_t seed,
                             const BatchCallback& on_batch);

}  // namespace tlcore::detail
