// A batch loader: worker threads decode and augment whole batches straight
// into preallocated tensors, a bounded prefetch queue hands them out in order.
// Each epoch is a permutation drawn from (seed, epoch) and each sample's
// augmentation from (seed, epoch, index): results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "tlcore/augment/pipeline.h"
#include "tlcore/data/dataset.h"

namespace tlcore {

struct LoaderOptions {
  std::int64_t batch_size = 32;
  bool shuffle = true;
  bool drop_last = false;
  std::uint64_t seed = 0;
  int num_workers = 0;        // 0: one per available core
  int prefetch = 2;           // batches ready ahead, per worker
  bool uint8_output = false;  // uint8 NCHW, normalise later (e.g. on the GPU)
  bool pin_memory = false;    // page-locked batches when CUDA is present
  bool skip_corrupt = false;  // drop undecodable samples (counted) instead of raising
  // Sharding across ranks (DistributedSampler semantics): this loader yields
  // the samples of shard `rank` of `world_size` of every epoch's permutation.
  int rank = 0;
  int world_size = 1;
  // For sharded data (Dataset::shard_starts), read shard by shard: shards are
  // shuffled whole, each rank takes a contiguous run of them, and samples are
  // shuffled through a buffer of this many, so reads stay inside a few files
  // at a time. 0: shuffle every sample at once, as for unsharded data.
  std::int64_t shuffle_buffer = 10000;
};

struct Batch {
  at::Tensor images;   // float32 or uint8, N x C x H x W
  at::Tensor labels;   // int64, N
  at::Tensor indices;  // int64, N: dataset indices, for reports and debugging
};

class Loader {
 public:
  Loader(DatasetPtr dataset, PipelinePtr pipeline, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts producing epoch `epoch` (stopping whatever epoch was running).
  void start_epoch(std::int64_t epoch);
  // Next batch of the current epoch, blocking until it is ready; nullopt at the end.
  // Rethrows a worker's error (e.g. a corrupt image) here, in the caller's thread.
  std::optional<Batch> next();

  // The dataset indices epoch `epoch` yields, in order (this rank's shard, drop_last applied),
  // without loading anything: lets cached features replay the loader's batches exactly.
  std::vector<std::int64_t> epoch_indices(std::int64_t epoch) const;

  std::int64_t num_batches() const;
  std::int64_t num_samples() const;  // samples per epoch of this rank
  std::int64_t skipped() const;      // corrupt samples skipped so far (skip_corrupt)
  const LoaderOptions& options() const;
  const Dataset& dataset() const;
  const Pipeline& pipeline() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tlcore
