// A fit's progress through its epochs: the history, the best epoch by the
// monitored metric and its weights, and early stopping (private to train/).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tlcore/models/model.h"
#include "tlcore/train/trainer.h"

namespace tlcore::detail {

// All a checkpoint holds besides the current weights and the optimizer.
struct Progress {
  std::vector<EpochStats> history;
  std::int64_t best_epoch = -1;
  double best_metric = -std::numeric_limits<double>::infinity();
  std::int64_t bad_epochs = 0;  // epochs since the best one
  bool stopped = false;
  models::StateDict best;  // the best epoch's weights (with restore_best)

  std::int64_t next_epoch() const { return std::int64_t(history.size()); }
  bool done(std::int64_t epochs) const { return stopped || next_epoch() >= epochs; }
};

// The monitored metric of `s`, larger is better ("val_loss" is negated); throws
// InvalidArgument for a monitor other than val_accuracy, val_f1 and val_loss.
double monitored_metric(const EpochStats& s, const std::string& monitor);

// Appends `s` to the history. With validation metrics, keeps the best epoch by
// o.monitor (and its weights with o.restore_best), and stops after o.patience
// epochs without improvement.
void record_epoch(Progress& progress, const EpochStats& s, const FitOptions& o,
                  const models::ModelImpl& model);

// With o.restore_best, puts the best epoch's weights back into `model`.
void restore_best(models::ModelImpl& model, const Progress& progress, const FitOptions& o);

// A copy of the weights and buffers that later training does not touch.
models::StateDict snapshot(const models::ModelImpl& model);

}  // namespace tlcore::detail
