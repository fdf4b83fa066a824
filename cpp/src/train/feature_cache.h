// Training a model's trainable tail on what its frozen part computes, computed
// once (FitOptions::cache_features; private to train/): the embeddings when only
// the head trains, else the feature maps after the frozen leading blocks. Each
// epoch replays the loader's own batches from the cache, so with a deterministic
// pipeline the result equals training from the loader.
#pragma once

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mixed_precision.h"
#include "row_file.h"
#include "tlcore/loader.h"
#include "tlcore/train/distributed.h"
#include "training_data.h"

namespace tlcore::detail {

// Rows of one loader epoch, one per dataset index (row_of[index], -1 for none).
// In memory they live on the model's device; in a row file they are CPU views of
// its mapping, copied to the device a batch at a time.
struct CachedRows {
  torch::Tensor inputs;   // embeddings (blocks 0) or feature maps after `blocks` blocks
  torch::Tensor flipped;  // the mirrored images' rows, when cached
  torch::Tensor labels;
  std::vector<std::int64_t> row_of;
  std::shared_ptr<RowFile> file;  // what the tensors view, when the rows exceed memory_cap
};

// How rows are kept: their dtype and, above `memory_cap` bytes, the file at `path`.
struct RowStorage {
  torch::ScalarType dtype = torch::kFloat;
  std::int64_t memory_cap = -1;  // -1: no cap
  std::string path;
  std::string fingerprint;  // recorded in the file's header
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
                        std::int64_t blocks, bool flip, const RowStorage& storage);

// Each map of `maps` (N, C, H, W) moved by its (dy, dx) of `offsets`, cells
// uncovered filled with zeros: out[n, :, y, x] = maps[n, :, y - dy, x - dx].
// |dy|, |dx| <= `reach`.
torch::Tensor shifted_maps(const torch::Tensor& maps,
                           const std::vector<std::array<std::int64_t, 2>>& offsets,
                           std::int64_t reach);

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
  std::string cache_report() const override { return report_; }

 private:
  // The rows of `loader`'s epoch `epoch`: reused from a row file whose fingerprint
  // matches, else computed (into memory or a row file, as o.cache_memory says).
  CachedRows rows_for(Loader& loader, std::int64_t epoch, bool flip, ProcessGroup* group,
                      const FitOptions& o, const std::string& role);
  // Stored rows as the tail takes them: on the model's device, and in float32
  // without amp (float16 or bfloat16 rows save memory, not arithmetic).
  torch::Tensor to_compute(const torch::Tensor& rows) const {
    return rows.to(device_, amp_.enabled ? rows.scalar_type() : torch::kFloat);
  }

  models::Model model_;
  std::shared_ptr<Loader> train_;
  bool channels_last_, flip_;
  std::int64_t shift_;
  Amp amp_;
  std::int64_t blocks_;
  torch::Device device_;
  CachedRows train_rows_, val_rows_;
  std::string report_;
  // The current epoch: its dataset indices in the loader's order, and the next one's position.
  std::int64_t epoch_ = 0;
  std::vector<std::int64_t> order_;
  std::size_t position_ = 0;
};

}  // namespace tlcore::detail
