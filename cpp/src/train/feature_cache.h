// Training a model's trainable tail on what its frozen part computes, computed
// once (FitOptions::cache_features; private to train/): the embeddings when only
// the head trains, else the feature maps after the frozen leading blocks. Each
// epoch replays the loader's own batches from the cache, so with a deterministic
// pipeline the result equals training from the loader.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "mixed_precision.h"
#include "tlcore/loader.h"
#include "tlcore/train/distributed.h"
#include "training_data.h"

namespace tlcore::detail {

// Rows of one loader epoch, one per dataset index (row_of[index], -1 for none).
struct CachedRows {
  torch::Tensor inputs;   // embeddings (blocks 0) or feature maps after `blocks` blocks
  torch::Tensor flipped;  // the mirrored images' rows, when cached
  torch::Tensor labels;
  std::vector<std::int64_t> row_of;
};

// How many leading blocks the cache computes: 0 (the embeddings) when only the
// head trains. Throws InvalidArgument when something trains in front of every
// frozen block, so nothing could be cached.
std::int64_t cached_blocks(const models::ModelImpl& model);

// The rows of loader epoch `epoch`. With a process group every rank computes its
// shard and all ranks end up with every row, since later epochs deal the samples
// to ranks differently. `flip`: the mirrored images' rows too.
CachedRows compute_rows(models::ModelImpl& model, Loader& loader, std::int64_t epoch,
                        bool channels_last, const Amp& amp, ProcessGroup* group,
                        std::int64_t blocks, bool flip = false);

class FeatureCache : public TrainingData {
 public:
  // Computes the training rows (loader epoch o.epoch_offset) and, when `val` is
  // given, the validation rows.
  FeatureCache(models::Model model, std::shared_ptr<Loader> train, std::shared_ptr<Loader> val,
               std::shared_ptr<ProcessGroup> group, const FitOptions& o, const Amp& amp,
               std::int64_t blocks);

  void start_epoch(std::int64_t epoch) override;
  std::optional<TrainingBatch> next() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  Predictions validate() override;

 private:
  models::Model model_;
  std::shared_ptr<Loader> train_;
  bool channels_last_, flip_;
  Amp amp_;
  std::int64_t blocks_;
  CachedRows train_rows_, val_rows_;
  // The current epoch: its dataset indices in the loader's order, and the next one's position.
  std::int64_t epoch_ = 0;
  std::vector<std::int64_t> order_;
  std::size_t position_ = 0;
};

}  // namespace tlcore::detail
