// BatchNorm across the ranks of a data-parallel fit (private to train/).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "tlcore/models/model.h"
#include "tlcore/train/distributed.h"

namespace tlcore::detail {

// SyncBatchNorm for one fit: the model's BatchNorm layers normalise training
// batches with every rank's statistics until this goes out of scope.
class BatchNormSync {
 public:
  BatchNormSync(models::ModelImpl& model, std::shared_ptr<ProcessGroup> group);
  ~BatchNormSync();
  BatchNormSync(const BatchNormSync&) = delete;
  BatchNormSync& operator=(const BatchNormSync&) = delete;

  // Layers that synchronise; 0 when the model's BatchNorm cannot (TorchScript).
  std::int64_t layers() const { return layers_; }

 private:
  models::ModelImpl& model_;
  std::int64_t layers_ = 0;
};

// Running means and variances of BatchNorm layers, averaged over ranks.
void average_batchnorm_statistics(models::ModelImpl& model, ProcessGroup& group);

}  // namespace tlcore::detail
