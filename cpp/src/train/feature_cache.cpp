#include "feature_cache.h"

#include <algorithm>
#include <string>

#include "../core/torch_compat.h"
#include "device_input.h"
#include "lazy_inference.h"
#include "tlcore/augment/rng.h"
#include "tlcore/error.h"

namespace tlcore::detail {
namespace {

// Validation rows go through the head this many at a time.
constexpr std::int64_t kValidationChunk = 256;

// Dataset index -> row, for `indices` as gathered; padded shards repeat a few
// samples, and the first row of each counts.
std::vector<std::int64_t> rows_by_index(torch::Tensor indices, std::int64_t dataset_size) {
  indices = indices.contiguous();
  std::vector<std::int64_t> row_of(static_cast<std::size_t>(dataset_size), -1);
  const auto* idx = indices.data_ptr<std::int64_t>();
  for (std::int64_t row = 0; row < indices.size(0); ++row) {
    auto& r = row_of[std::size_t(idx[row])];
    if (r < 0) r = row;
  }
  return row_of;
}

// Every rank's rows, in rank order, on `device`.
torch::Tensor gather(ProcessGroup& group, const torch::Tensor& rows, torch::Device device,
                     const std::string& what) {
  return group.gather_rows(rows.cpu(), what).to(device);
}

}  // namespace

std::int64_t cached_blocks(const models::ModelImpl& model) {
  std::string trainable;  // the last trainable parameter outside the head
  for (const auto& item : model.named_parameters())
    if (item.value().requires_grad() && !models::has_prefix(item.key(), model.head_name()))
      trainable = item.key();
  if (trainable.empty()) return 0;
  const std::int64_t blocks = frozen_prefix(model);
  if (blocks == 0)
    throw InvalidArgument("cache_features needs the backbone, or its leading blocks, frozen; '" +
                          trainable + "' is trainable and no leading block is frozen");
  return blocks;
}

CachedRows compute_rows(models::ModelImpl& model, Loader& loader, std::int64_t epoch,
                        bool channels_last, const Amp& amp, ProcessGroup* group,
                        std::int64_t blocks, bool flip) {
  torch::InferenceMode guard;
  model.eval();
  const DeviceInput input(model_device(model), channels_last, loader.pipeline());
  LazyInference frozen(
      model, blocks == 0 ? models::InferenceOutput::kEmbedding : models::InferenceOutput::kFeatures,
      blocks, graph_precision(amp, input.device()));
  // Under bf16 the rows are kept in bf16: half the memory, and what the tail computes in.
  const auto stored = amp.enabled ? amp.dtype : torch::kFloat;
  std::vector<torch::Tensor> inputs, flipped, labels, indices;
  loader.start_epoch(epoch);
  while (auto batch = loader.next()) {
    compat::AutocastGuard autocast(input.device().type(), amp.dtype, amp.enabled);
    const auto x = input(batch->images);
    inputs.push_back(frozen.forward(x).to(stored).contiguous());
    // Normalising is per channel, so mirroring the normalised batch mirrors the images.
    if (flip) flipped.push_back(frozen.forward(x.flip({3})).to(stored).contiguous());
    labels.push_back(batch->labels);
    indices.push_back(batch->indices);
  }
  CachedRows c;
  c.inputs = torch::cat(inputs).clone();
  inputs.clear();
  if (flip) c.flipped = torch::cat(flipped).clone();
  flipped.clear();
  c.labels = torch::cat(labels).to(input.device());
  auto index = torch::cat(indices);
  if (group) {
    c.inputs = gather(*group, c.inputs, input.device(), "gathering cached features");
    if (flip)
      c.flipped = gather(*group, c.flipped, input.device(), "gathering cached mirrored features");
    c.labels = gather(*group, c.labels, input.device(), "gathering cached labels");
    index = group->gather_rows(index, "gathering cached indices");
  }
  c.row_of = rows_by_index(index, loader.dataset().size());
  return c;
}

FeatureCache::FeatureCache(models::Model model, std::shared_ptr<Loader> train,
                           std::shared_ptr<Loader> val, std::shared_ptr<ProcessGroup> group,
                           const FitOptions& o, const Amp& amp, std::int64_t blocks)
    : model_(std::move(model)),
      train_(std::move(train)),
      channels_last_(o.channels_last),
      flip_(o.cache_flip),
      amp_(amp),
      blocks_(blocks) {
  train_rows_ = compute_rows(*model_, *train_, o.epoch_offset, channels_last_, amp_, group.get(),
                             blocks_, flip_);
  if (val) {
    const bool sharded = val->options().world_size > 1;
    val_rows_ = compute_rows(*model_, *val, 0, channels_last_, amp_,
                             sharded ? group.get() : nullptr, blocks_);
  }
}

void FeatureCache::start_epoch(std::int64_t epoch) {
  epoch_ = epoch;
  order_ = train_->epoch_indices(epoch);
  position_ = 0;
}

std::optional<TrainingBatch> FeatureCache::next() {
  const auto batch_size = static_cast<std::size_t>(train_->options().batch_size);
  while (position_ < order_.size()) {
    const std::size_t end = std::min(order_.size(), position_ + batch_size);
    std::vector<std::int64_t> rows;
    std::vector<std::uint8_t> mirror;
    for (std::size_t k = position_; k < end; ++k) {
      const std::int64_t r = train_rows_.row_of[std::size_t(order_[k])];
      if (r < 0) continue;  // a corrupt sample the loader skipped
      rows.push_back(r);
      // The draw the loader's RandomHorizontalFlip(0.5) makes for this (seed, epoch, index).
      if (flip_)
        mirror.push_back(
            Rng(train_->options().seed, std::uint64_t(epoch_), std::uint64_t(order_[k]))
                .bernoulli(0.5));
    }
    position_ = end;
    if (rows.empty()) continue;
    const auto device = train_rows_.inputs.device();
    const auto idx = torch::tensor(rows, torch::kLong).to(device);
    auto x = train_rows_.inputs.index_select(0, idx);
    if (flip_) {
      std::vector<std::int64_t> shape(std::size_t(x.dim()), 1);
      shape[0] = std::int64_t(mirror.size());
      const auto m = torch::from_blob(mirror.data(), shape, torch::kBool).to(device, false, true);
      x = torch::where(m, train_rows_.flipped.index_select(0, idx), x);
    }
    return TrainingBatch{x, train_rows_.labels.index_select(0, idx)};
  }
  return std::nullopt;
}

torch::Tensor FeatureCache::forward(const torch::Tensor& cached) {
  if (blocks_ == 0) return model_->classify(cached);
  const auto f = channels_last_ ? cached.contiguous(torch::MemoryFormat::ChannelsLast) : cached;
  return model_->classify(model_->embed_from(f, blocks_));
}

Predictions FeatureCache::validate() {
  torch::InferenceMode guard;
  model_->eval();
  std::vector<torch::Tensor> parts;
  for (const auto& chunk : val_rows_.inputs.split(kValidationChunk)) {
    compat::AutocastGuard autocast(chunk.device().type(), amp_.dtype, amp_.enabled);
    parts.push_back(forward(chunk).to(torch::kCPU, torch::kFloat));
  }
  Predictions p;
  p.logits = torch::cat(parts);
  p.labels = val_rows_.labels.cpu();
  p.loss = torch::nn::functional::cross_entropy(p.logits, p.labels).item<double>();
  return p;
}

}  // namespace tlcore::detail
