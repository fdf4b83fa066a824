#include "feature_cache.h"

#include <algorithm>
#include <filesystem>
#include <string>

#include "../core/torch_compat.h"
#include "../data/internal/index_cache.h"
#include "device_input.h"
#include "lazy_inference.h"
#include "row_fingerprint.h"
#include "tlcore/augment/rng.h"
#include "tlcore/error.h"
#include "tlcore/memory.h"

namespace tlcore::detail {
namespace {

// The dtype rows are stored in: o.cache_dtype, "auto" meaning the amp dtype (the
// tail computes in it anyway) or float32.
torch::ScalarType row_dtype(const std::string& name, const Amp& amp) {
  if (name == "auto") return amp.enabled ? amp.dtype : torch::kFloat;
  if (name == "float32") return torch::kFloat;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  throw InvalidArgument("cache_dtype must be auto, float32, bfloat16 or float16, got '" + name +
                        "'");
}

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

namespace {

// Where the rows of one pass go: memory on the model's device, or a row file
// when they would take more than the cap. Decided on the first batch, once a
// row's shape is known.
struct RowSink {
  torch::Tensor inputs, flipped, labels, indices;
  std::shared_ptr<RowFile> file;

  void allocate(const torch::Tensor& first, std::int64_t capacity, bool flip,
                const RowStorage& storage, bool distributed) {
    RowLayout layout;
    layout.row_shape.assign(first.sizes().begin() + 1, first.sizes().end());
    layout.dtype = storage.dtype;
    layout.capacity = capacity;
    layout.flip = flip;
    const std::int64_t bytes = (flip ? 2 : 1) * capacity * first[0].numel() *
                               static_cast<std::int64_t>(torch::elementSize(storage.dtype));
    if (storage.memory_cap >= 0 && bytes > storage.memory_cap) {
      if (distributed)
        throw InvalidArgument("cache_memory: the cached rows take " + std::to_string(bytes >> 20) +
                              " MiB, over the cap, and a distributed run gathers every rank's "
                              "rows in memory; raise cache_memory or use one process");
      file = std::make_shared<RowFile>(storage.path, layout);
      inputs = file->inputs();
      flipped = file->flipped();
      labels = file->labels();
      indices = file->indices();
      return;
    }
    std::vector<std::int64_t> shape{capacity};
    shape.insert(shape.end(), layout.row_shape.begin(), layout.row_shape.end());
    inputs = torch::empty(shape, first.options().dtype(storage.dtype));
    if (flip) flipped = torch::empty(shape, first.options().dtype(storage.dtype));
    labels = torch::empty({capacity}, torch::kLong);
    indices = torch::empty({capacity}, torch::kLong);
  }
};

}  // namespace

CachedRows compute_rows(models::ModelImpl& model, Loader& loader, std::int64_t epoch,
                        bool channels_last, const Amp& amp, ProcessGroup* group,
                        std::int64_t blocks, bool flip, const RowStorage& storage) {
  torch::InferenceMode guard;
  model.eval();
  const DeviceInput input(model_device(model), channels_last, loader.pipeline());
  LazyInference frozen(
      model, blocks == 0 ? models::InferenceOutput::kEmbedding : models::InferenceOutput::kFeatures,
      blocks, graph_precision(amp, input.device()));
  RowSink sink;
  std::int64_t rows = 0;
  loader.start_epoch(epoch);
  while (auto batch = loader.next()) {
    compat::AutocastGuard autocast(input.device().type(), amp.dtype, amp.enabled);
    const auto x = input(batch->images);
    const auto out = frozen.forward(x);
    if (!sink.inputs.defined())
      sink.allocate(out, loader.num_samples(), flip, storage, group != nullptr);
    const std::int64_t n = out.size(0);
    // One copy converts the dtype, the layout and, for a row file, the device.
    sink.inputs.narrow(0, rows, n).copy_(out);
    // Normalising is per channel, so mirroring the normalised batch mirrors the images.
    if (flip) sink.flipped.narrow(0, rows, n).copy_(frozen.forward(x.flip({3})));
    sink.labels.narrow(0, rows, n).copy_(batch->labels);
    sink.indices.narrow(0, rows, n).copy_(batch->indices);
    rows += n;
  }
  if (sink.file) sink.file->commit(rows, storage.fingerprint);
  CachedRows c;
  c.file = sink.file;
  c.inputs = sink.inputs.narrow(0, 0, rows);
  if (flip) c.flipped = sink.flipped.narrow(0, 0, rows);
  c.labels = sink.labels.narrow(0, 0, rows);
  auto index = sink.indices.narrow(0, 0, rows);
  if (!c.file) c.labels = c.labels.to(input.device());
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

torch::Tensor shifted_maps(const torch::Tensor& maps,
                           const std::vector<std::array<std::int64_t, 2>>& offsets,
                           std::int64_t reach) {
  const std::int64_t h = maps.size(2), w = maps.size(3);
  const auto padded = torch::constant_pad_nd(maps, {reach, reach, reach, reach});
  std::vector<torch::Tensor> moved;
  moved.reserve(offsets.size());
  for (std::size_t n = 0; n < offsets.size(); ++n) {
    const auto [dy, dx] = offsets[n];
    moved.push_back(padded[std::int64_t(n)].narrow(1, reach - dy, h).narrow(2, reach - dx, w));
  }
  return torch::stack(moved);
}

FeatureCache::FeatureCache(models::Model model, std::shared_ptr<Loader> train,
                           std::shared_ptr<Loader> val, std::shared_ptr<ProcessGroup> group,
                           const FitOptions& o, const Amp& amp, std::int64_t blocks)
    : model_(std::move(model)),
      train_(std::move(train)),
      channels_last_(o.channels_last),
      flip_(o.cache_flip),
      shift_(o.cache_shift),
      amp_(amp),
      blocks_(blocks),
      device_(model_device(*model_)) {
  if (shift_ > 0 && blocks_ == 0)
    throw InvalidArgument(
        "cache_shift needs cached feature maps, and only the head trains: its cache holds "
        "embeddings; unfreeze a block, or set cache_shift=0");
  train_rows_ = rows_for(*train_, o.epoch_offset, flip_, group.get(), o, "train");
  if (val) {
    const bool sharded = val->options().world_size > 1;
    val_rows_ = rows_for(*val, 0, false, sharded ? group.get() : nullptr, o, "val");
  }
}

CachedRows FeatureCache::rows_for(Loader& loader, std::int64_t epoch, bool flip,
                                  ProcessGroup* group, const FitOptions& o,
                                  const std::string& role) {
  RowStorage storage;
  storage.dtype = row_dtype(o.cache_dtype, amp_);
  storage.memory_cap = parse_byte_size(o.cache_memory, "cache_memory");
  if (!report_.empty()) report_ += "; ";
  report_ += role + ": ";
  if (storage.memory_cap >= 0 && !group) {
    const RowFingerprint f =
        row_fingerprint(*model_, loader, epoch, blocks_, flip, storage.dtype, o, amp_, role);
    const std::filesystem::path dir =
        o.cache_dir.empty() ? std::filesystem::path(internal::cache_root()) / "features"
                            : std::filesystem::path(o.cache_dir);
    storage.path = (dir / ("rows-" + f.name + ".tlcrows")).string();
    storage.fingerprint = f.full;
    std::string why;
    if (std::shared_ptr<RowFile> file = RowFile::open(storage.path, storage.fingerprint, &why)) {
      report_ += "reused " + storage.path;
      CachedRows c;
      c.inputs = file->inputs();
      c.flipped = file->flipped();
      c.labels = file->labels();
      c.row_of = rows_by_index(file->indices(), loader.dataset().size());
      c.file = std::move(file);
      return c;
    }
    if (!why.empty()) {
      std::error_code ec;
      std::filesystem::remove(storage.path, ec);
      report_ += storage.path + " was stale (" + why + ") and was deleted; ";
    }
  }
  CachedRows rows =
      compute_rows(*model_, loader, epoch, channels_last_, amp_, group, blocks_, flip, storage);
  report_ += rows.file ? "computed into " + storage.path : std::string("memory");
  return rows;
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
    std::vector<std::array<std::int64_t, 2>> offsets;
    for (std::size_t k = position_; k < end; ++k) {
      const std::int64_t r = train_rows_.row_of[std::size_t(order_[k])];
      if (r < 0) continue;  // a corrupt sample the loader skipped
      rows.push_back(r);
      if (!flip_ && shift_ == 0) continue;
      Rng rng(train_->options().seed, std::uint64_t(epoch_), std::uint64_t(order_[k]));
      // First, the draw the loader's RandomHorizontalFlip(0.5) makes for this sample.
      if (flip_) mirror.push_back(rng.bernoulli(0.5));
      if (shift_ > 0) offsets.push_back({rng.integer(-shift_, shift_), rng.integer(-shift_, shift_)});
    }
    position_ = end;
    if (rows.empty()) continue;
    const auto stored_on = train_rows_.inputs.device();
    const auto idx = torch::tensor(rows, torch::kLong).to(stored_on);
    auto x = train_rows_.inputs.index_select(0, idx);
    if (flip_) {
      std::vector<std::int64_t> shape(std::size_t(x.dim()), 1);
      shape[0] = std::int64_t(mirror.size());
      const auto m =
          torch::from_blob(mirror.data(), shape, torch::kBool).to(stored_on, false, true);
      x = torch::where(m, train_rows_.flipped.index_select(0, idx), x);
    }
    if (shift_ > 0) x = shifted_maps(x, offsets, shift_);
    return TrainingBatch{to_compute(x), train_rows_.labels.index_select(0, idx).to(device_)};
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
    compat::AutocastGuard autocast(device_.type(), amp_.dtype, amp_.enabled);
    parts.push_back(forward(to_compute(chunk)).to(torch::kCPU, torch::kFloat));
  }
  Predictions p;
  p.logits = torch::cat(parts);
  p.labels = val_rows_.labels.cpu();
  p.loss = torch::nn::functional::cross_entropy(p.logits, p.labels).item<double>();
  return p;
}

}  // namespace tlcore::detail
