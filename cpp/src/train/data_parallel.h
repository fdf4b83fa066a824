// This process's part in a data-parallel fit (private to train/): the same
// weights on every rank at the start, gradients averaged after every backward,
// BatchNorm across ranks, and agreement on when to stop. Without a process
// group (or with a group of one) every method does what a single process needs.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "batchnorm_sync.h"
#include "tlcore/models/model.h"
#include "tlcore/train/distributed.h"

namespace tlcore::detail {

class DataParallel {
 public:
  // Broadcasts rank 0's weights and starts SyncBatchNorm (with `sync_batchnorm`).
  DataParallel(models::ModelImpl& model, std::shared_ptr<ProcessGroup> group, bool sync_batchnorm);

  // After backward: every trainable gradient holds the mean over ranks.
  void average_gradients();
  // After an epoch's training steps: BatchNorm layers that could not synchronise
  // (TorchScript models) at least share running statistics.
  void end_epoch();
  // Sums `t` (on the CPU) over ranks, in place.
  void sum(torch::Tensor& t, const std::string& what);
  // True when every rank's `go_on` is: any rank's callback may stop the run, and
  // all ranks must stop together.
  bool all_go_on(bool go_on);
  // Runs `write` on rank 0 only; every rank returns once it is done.
  void on_first_rank(const std::function<void()>& write, const std::string& what);

 private:
  models::ModelImpl& model_;
  std::shared_ptr<ProcessGroup> group_;
  std::optional<BatchNormSync> batchnorm_sync_;
  bool average_batchnorm_ = false;
  std::unique_ptr<GradientReducer> reducer_;
};

}  // namespace tlcore::detail
