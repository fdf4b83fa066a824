#include "tlcore/train/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>

#include "../core/torch_compat.h"
#include "optimizer.h"
#include "tlcore/augment/rng.h"
#include "tlcore/error.h"
#include "tlcore/metrics/classification.h"
#include "tlcore/models/inference.h"

namespace tlcore {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kDropoutStream = 0x44524f504f5554ULL;

void to_channels_last(models::ModelImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
}

torch::Device model_device(const models::ModelImpl& model) {
  const auto params = model.parameters();
  return params.empty() ? torch::Device(torch::kCPU) : params.front().device();
}

// Moves a batch to the model's device and normalises uint8 batches there, so
// a GPU receives a quarter of the bytes and does the arithmetic itself.
class Input {
 public:
  Input(torch::Device device, bool channels_last, const Pipeline& pipeline)
      : device_(device), channels_last_(channels_last) {
    if (!pipeline.mean().empty()) {
      const auto c = static_cast<std::int64_t>(pipeline.mean().size());
      mean_ = torch::tensor(pipeline.mean()).view({1, c, 1, 1}).to(device);
      std_ = torch::tensor(pipeline.std()).view({1, c, 1, 1}).to(device);
    }
  }

  torch::Tensor operator()(const torch::Tensor& images) const {
    auto x = images.to(device_, /*non_blocking=*/true);
    if (x.scalar_type() == torch::kByte) {
      x = x.to(torch::kFloat).div_(255);
      if (mean_.defined()) x.sub_(mean_).div_(std_);
    }
    return channels_last_ && x.dim() == 4 ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
  }

  torch::Device device() const { return device_; }

 private:
  torch::Device device_;
  bool channels_last_;
  torch::Tensor mean_, std_;
};

struct Amp {
  bool enabled = false;
  torch::ScalarType dtype = torch::kFloat;
  bool scaled = false;  // fp16 needs a loss scale; bf16 has float32's range
};

Amp parse_amp(const std::string& amp, torch::Device device) {
  if (amp == "off" || amp.empty()) return {};
  if (amp == "bf16") return {true, torch::kBFloat16, false};
  if (amp == "fp16") {
    if (!device.is_cuda())
      throw InvalidArgument("amp 'fp16' needs a CUDA device (use 'bf16' on the CPU)");
    return {true, torch::kHalf, true};
  }
  throw InvalidArgument("amp must be 'off', 'bf16' or 'fp16', got '" + amp + "'");
}

// Compiles lazily for the first batch's size; batches of another size run eagerly.
class LazyInference {
 public:
  // `model` must be owned by a shared_ptr (every models::Model is).
  LazyInference(models::ModelImpl& model, models::InferenceOutput output, int64_t blocks = 0)
      : model_(model), output_(output), blocks_(blocks) {}

  torch::Tensor forward(const torch::Tensor& x) {
    const bool square = x.dim() == 4 && x.size(2) == x.size(3);
    // The compiled graph is a CPU (oneDNN) optimisation: CUDA runs the eager model.
    if (!compiled_ && square && !failed_ && !x.is_cuda()) {
      const bool was_training = model_.is_training();
      try {
        compiled_.emplace(std::static_pointer_cast<models::ModelImpl>(model_.shared_from_this()),
                          x.size(2), output_, blocks_);
      } catch (const Error&) {
        failed_ = true;  // e.g. a graph oneDNN cannot run: the eager path is still right
      }
      model_.train(was_training);
    }
    if (compiled_ && square && x.size(2) == compiled_->image_size()) return compiled_->forward(x);
    torch::NoGradGuard no_grad;
    switch (output_) {
      case models::InferenceOutput::kLogits:
        return model_.forward(x);
      case models::InferenceOutput::kEmbedding:
        return model_.embed(x);
      case models::InferenceOutput::kFeatures:
        break;
    }
    return model_.features(x, blocks_);
  }

 private:
  models::ModelImpl& model_;
  models::InferenceOutput output_;
  int64_t blocks_;
  std::optional<models::InferenceModel> compiled_;
  bool failed_ = false;
};

// Leading blocks that are frozen and can be cut off as a prefix.
int64_t frozen_prefix(const models::ModelImpl& model) {
  int64_t k = 0;
  for (const auto& block : model.blocks()) {
    if (!model.is_frozen(block.name)) break;
    ++k;
  }
  return std::min(k, model.splittable_blocks());
}

double metric_of(const EpochStats& s, const std::string& monitor) {
  if (monitor == "val_accuracy") return s.val_accuracy;
  if (monitor == "val_f1") return s.val_f1;
  if (monitor == "val_loss") return -s.val_loss;  // larger is better everywhere below
  throw InvalidArgument("unknown monitor '" + monitor +
                        "' (known: val_accuracy, val_f1, val_loss)");
}

// Validation metrics from logits: loss, accuracy and macro F1.
void score(const Predictions& p, std::int64_t num_classes, EpochStats& s) {
  const auto pred = p.logits.argmax(1).contiguous();
  const auto labels = p.labels.contiguous();
  std::vector<std::int64_t> y(labels.data_ptr<std::int64_t>(),
                              labels.data_ptr<std::int64_t>() + labels.numel());
  std::vector<std::int64_t> yhat(pred.data_ptr<std::int64_t>(),
                                 pred.data_ptr<std::int64_t>() + pred.numel());
  const auto report = classification_report(y, yhat, num_classes);
  s.has_val = true;
  s.val_loss = p.loss;
  s.val_accuracy = report.accuracy;
  s.val_f1 = report.macro.f1;
}

// Every field of the history as one row of doubles, so the checkpoint stores it as a tensor.
constexpr int kHistoryFields = 10;
std::vector<double> to_row(const EpochStats& s) {
  return {double(s.epoch), s.train_loss,       s.train_accuracy, double(s.has_val),
          s.val_loss,      s.val_accuracy,     s.val_f1,         s.lr,
          s.seconds,       s.images_per_second};
}
EpochStats from_row(const double* r, const std::string& phase) {
  EpochStats s;
  s.epoch = static_cast<std::int64_t>(r[0]);
  s.phase = phase;
  s.train_loss = r[1];
  s.train_accuracy = r[2];
  s.has_val = r[3] != 0;
  s.val_loss = r[4];
  s.val_accuracy = r[5];
  s.val_f1 = r[6];
  s.lr = r[7];
  s.seconds = r[8];
  s.images_per_second = r[9];
  return s;
}

// What a checkpoint holds besides the weights and the optimizer.
struct Progress {
  std::vector<EpochStats> history;
  std::int64_t best_epoch = -1;
  double best_metric = -std::numeric_limits<double>::infinity();
  std::int64_t bad_epochs = 0;
  bool stopped = false;
};

void write_state(torch::serialize::OutputArchive& archive, const std::string& prefix,
                 const models::StateDict& state) {
  for (const auto& [name, tensor] : state) archive.write(prefix + name, tensor.contiguous(), true);
}

void read_state(torch::serialize::InputArchive& archive, const std::string& prefix,
                models::ModelImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    torch::Tensor t;
    archive.read(prefix + item.key(), t);
    item.value().copy_(t);
  }
  for (auto& item : model.named_buffers()) {
    torch::Tensor t;
    archive.read(prefix + item.key(), t, true);
    item.value().copy_(t);
  }
}

void save_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, const Progress& p,
                     const models::StateDict& best) {
  torch::serialize::OutputArchive archive;
  archive.write("meta.arch", c10::IValue(model.arch()));
  archive.write("meta.phase", c10::IValue(o.phase));
  archive.write("meta.best_epoch", c10::IValue(p.best_epoch));
  archive.write("meta.best_metric", c10::IValue(p.best_metric));
  archive.write("meta.bad_epochs", c10::IValue(p.bad_epochs));
  archive.write("meta.stopped", c10::IValue(p.stopped));
  auto history = torch::zeros({std::int64_t(p.history.size()), kHistoryFields}, torch::kDouble);
  for (std::size_t i = 0; i < p.history.size(); ++i) {
    const auto row = to_row(p.history[i]);
    for (int j = 0; j < kHistoryFields; ++j) history[std::int64_t(i)][j] = row[std::size_t(j)];
  }
  archive.write("meta.history", history, true);
  write_state(archive, "model.", model.state_dict());
  write_state(archive, "best.", best);
  torch::serialize::OutputArchive opt_archive;
  optimizer.save(opt_archive);
  archive.write("optimizer", opt_archive);
  // Write beside the target, then rename: a kill mid-write never leaves a torn checkpoint.
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  archive.save_to(tmp);
  fs::rename(tmp, target);
}

bool load_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, Progress& p, models::StateDict& best,
                     torch::Device device) {
  if (path.empty() || !fs::exists(path)) return false;
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, device);
  } catch (const c10::Error& e) {
    throw FormatError(path + ": not a readable tlcore checkpoint (" + e.what_without_backtrace() +
                      ")");
  }
  c10::IValue v;
  archive.read("meta.arch", v);
  if (v.toStringRef() != model.arch())
    throw InvalidArgument(path + ": checkpoint of a " + v.toStringRef() + ", not a " +
                          model.arch());
  archive.read("meta.phase", v);
  if (v.toStringRef() != o.phase)
    throw InvalidArgument(path + ": checkpoint of phase '" + v.toStringRef() + "', not '" +
                          o.phase + "'");
  archive.read("meta.best_epoch", v);
  p.best_epoch = v.toInt();
  archive.read("meta.best_metric", v);
  p.best_metric = v.toDouble();
  archive.read("meta.bad_epochs", v);
  p.bad_epochs = v.toInt();
  archive.read("meta.stopped", v);
  p.stopped = v.toBool();
  torch::Tensor history;
  archive.read("meta.history", history, true);
  history = history.contiguous();
  p.history.clear();
  for (std::int64_t i = 0; i < history.size(0); ++i)
    p.history.push_back(from_row(history[i].data_ptr<double>(), o.phase));
  read_state(archive, "model.", model);
  best.clear();
  if (p.best_epoch >= 0) {
    // Read into a copy of the current weights so `best` keeps its own storage.
    best = model.state_dict();
    for (auto& [name, tensor] : best) {
      torch::Tensor t;
      if (!archive.try_read("best." + name, t, true)) {
        best.clear();  // a run with restore_best off keeps no best weights
        break;
      }
      tensor = t.clone();
    }
  }
  torch::serialize::InputArchive opt_archive;
  archive.read("optimizer", opt_archive);
  optimizer.load(opt_archive);
  return true;
}

models::StateDict snapshot(const models::ModelImpl& model) {
  auto state = model.state_dict();
  for (auto& item : state) item.second = item.second.detach().clone();
  return state;
}

void restore(models::ModelImpl& model, const models::StateDict& state) {
  torch::NoGradGuard no_grad;
  auto params = model.named_parameters();
  auto buffers = model.named_buffers();
  for (const auto& [name, tensor] : state) {
    if (auto* p = params.find(name)) {
      p->copy_(tensor);
    } else if (auto* b = buffers.find(name)) {
      b->copy_(tensor);
    }
  }
}

// Embeddings of one loader epoch, one row per dataset index (row_of[index]).
struct Features {
  torch::Tensor embeddings;
  torch::Tensor flipped;  // the mirrored images' rows, when cached
  torch::Tensor labels;
  std::vector<std::int64_t> row_of;
};

// The embeddings (`blocks` 0) or the feature maps after the first `blocks`
// blocks of one loader epoch. With a process group every rank computes its
// shard and all ranks end up with every row, since later epochs deal the
// samples to ranks differently.
Features cache_features(models::ModelImpl& model, Loader& loader, std::int64_t epoch,
                        bool channels_last, const Amp& amp, ProcessGroup* group,
                        std::int64_t blocks, bool flip = false) {
  torch::InferenceMode guard;
  model.eval();
  const Input input(model_device(model), channels_last, loader.pipeline());
  std::vector<torch::Tensor> embeddings, flipped, labels, indices;
  LazyInference backbone(
      model, blocks == 0 ? models::InferenceOutput::kEmbedding : models::InferenceOutput::kFeatures,
      blocks);
  loader.start_epoch(epoch);
  while (auto batch = loader.next()) {
    compat::AutocastGuard autocast(input.device().type(), amp.dtype, amp.enabled);
    const auto x = input(batch->images);
    embeddings.push_back(backbone.forward(x).to(torch::kFloat).contiguous());
    // Normalising is per channel, so mirroring the normalised batch mirrors the images.
    if (flip) flipped.push_back(backbone.forward(x.flip({3})).to(torch::kFloat).contiguous());
    labels.push_back(batch->labels);
    indices.push_back(batch->indices);
  }
  Features f;
  f.embeddings = torch::cat(embeddings).clone();
  embeddings.clear();
  if (flip) f.flipped = torch::cat(flipped).clone();
  flipped.clear();
  f.labels = torch::cat(labels).to(input.device());
  auto index = torch::cat(indices);
  if (group) {
    f.embeddings =
        group->gather_rows(f.embeddings.cpu(), "gathering cached features").to(input.device());
    if (flip)
      f.flipped = group->gather_rows(f.flipped.cpu(), "gathering cached mirrored features")
                      .to(input.device());
    f.labels = group->gather_rows(f.labels.cpu(), "gathering cached labels").to(input.device());
    index = group->gather_rows(index, "gathering cached indices");
  }
  index = index.contiguous();
  f.row_of.assign(static_cast<std::size_t>(loader.dataset().size()), -1);
  const auto* idx = index.data_ptr<std::int64_t>();
  for (std::int64_t row = 0; row < index.size(0); ++row) {
    auto& r = f.row_of[std::size_t(idx[row])];
    if (r < 0) r = row;  // padded shards repeat a few samples
  }
  return f;
}

// Every rank's predictions, each dataset index once (padded shards repeat some).
Predictions gather_predictions(ProcessGroup& group, const Predictions& p) {
  Predictions all;
  const auto logits = group.gather_rows(p.logits.cpu(), "gathering validation logits");
  const auto labels = group.gather_rows(p.labels.cpu(), "gathering validation labels");
  const auto indices =
      group.gather_rows(p.indices.cpu(), "gathering validation indices").contiguous();
  std::vector<std::int64_t> keep;
  std::vector<bool> seen;
  const auto* idx = indices.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < indices.size(0); ++i) {
    const auto k = static_cast<std::size_t>(idx[i]);
    if (k >= seen.size()) seen.resize(k + 1, false);
    if (seen[k]) continue;
    seen[k] = true;
    keep.push_back(i);
  }
  const auto rows = torch::tensor(keep, torch::kLong);
  all.logits = logits.index_select(0, rows);
  all.labels = labels.index_select(0, rows);
  all.indices = indices.index_select(0, rows);
  all.loss = torch::nn::functional::cross_entropy(all.logits, all.labels).item<double>();
  return all;
}

// SyncBatchNorm for one fit: the model's BatchNorm layers normalise training
// batches with every rank's statistics until this goes out of scope.
class BatchNormSync {
 public:
  BatchNormSync(models::ModelImpl& model, std::shared_ptr<ProcessGroup> group) : model_(model) {
    layers_ = model_.sync_batchnorm([group = std::move(group)](torch::Tensor& t) {
      group->all_reduce_sum(t, "synchronising BatchNorm statistics");
    });
  }
  ~BatchNormSync() { model_.sync_batchnorm(nullptr); }
  BatchNormSync(const BatchNormSync&) = delete;
  BatchNormSync& operator=(const BatchNormSync&) = delete;
  std::int64_t layers() const { return layers_; }

 private:
  models::ModelImpl& model_;
  std::int64_t layers_ = 0;
};

// Running means and variances of BatchNorm layers, averaged over ranks.
void average_batchnorm_statistics(models::ModelImpl& model, ProcessGroup& group) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> stats;
  for (auto& item : model.named_buffers()) {
    const auto& name = item.key();
    const auto ends_with = [&](const std::string& tail) {
      return name.size() >= tail.size() &&
             name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (ends_with("running_mean") || ends_with("running_var")) stats.push_back(item.value());
  }
  if (stats.empty()) return;
  std::vector<torch::Tensor> flat_parts;
  for (const auto& t : stats) flat_parts.push_back(t.reshape({-1}).to(torch::kCPU, torch::kFloat));
  auto flat = torch::cat(flat_parts);
  group.all_reduce_sum(flat, "averaging BatchNorm statistics");
  flat.div_(group.world_size());
  std::int64_t offset = 0;
  for (auto& t : stats) {
    t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

}  // namespace

std::vector<double> balanced_class_weights(const std::vector<std::int64_t>& labels,
                                           std::int64_t num_classes) {
  std::vector<double> counts(static_cast<std::size_t>(num_classes), 0.0);
  for (auto y : labels) {
    if (y < 0 || y >= num_classes) throw InvalidArgument("class weights: label out of range");
    counts[static_cast<std::size_t>(y)] += 1;
  }
  std::vector<double> w(counts.size(), 0.0);
  for (std::size_t c = 0; c < counts.size(); ++c)
    w[c] = counts[c] > 0 ? double(labels.size()) / (double(num_classes) * counts[c]) : 0.0;
  return w;
}

std::string resolve_device(const std::string& device) {
  if (device == "cpu") return "cpu";
  if (device == "cuda" || device == "auto") {
    if (torch::cuda::is_available()) return "cuda";
    if (device == "auto") return "cpu";
    throw InvalidArgument("device 'cuda' asked for, but CUDA is not available (torch " +
                          std::string(TORCH_VERSION) + " built without it, or no GPU)");
  }
  throw InvalidArgument("device must be 'cpu', 'cuda' or 'auto', got '" + device + "'");
}

Predictions predict(models::Model model, Loader& loader, bool channels_last, bool flip_tta,
                    const BatchCallback& on_batch, bool compiled, const std::string& amp_name) {
  torch::InferenceMode guard;
  const bool was_training = model->is_training();
  model->eval();
  if (channels_last) to_channels_last(*model);
  const Input input(model_device(*model), channels_last, loader.pipeline());
  const Amp amp = parse_amp(amp_name, input.device());
  std::optional<LazyInference> fast;
  if (compiled) fast.emplace(*model, models::InferenceOutput::kLogits);
  auto forward = [&](const torch::Tensor& x) {
    return fast ? fast->forward(x) : model->forward(x);
  };
  std::vector<torch::Tensor> logits, labels, indices;
  loader.start_epoch(0);
  double loss_sum = 0;
  std::int64_t n = 0, b = 0;
  while (auto batch = loader.next()) {
    auto x = input(batch->images);
    torch::Tensor out;
    {
      compat::AutocastGuard autocast(input.device().type(), amp.dtype, amp.enabled);
      out = forward(x);
      if (flip_tta) out = torch::stack({out, forward(x.flip({3}))});
    }
    out = out.to(torch::kCPU, torch::kFloat);
    if (flip_tta) out = ((torch::softmax(out[0], 1) + torch::softmax(out[1], 1)) / 2).log();
    const auto loss =
        torch::nll_loss(torch::log_softmax(out, 1), batch->labels, {}, at::Reduction::Sum);
    loss_sum += loss.item<double>();
    n += batch->labels.size(0);
    logits.push_back(out);
    labels.push_back(batch->labels);
    indices.push_back(batch->indices);
    if (on_batch)
      on_batch(++b, loader.num_batches(), loss_sum / double(std::max<std::int64_t>(n, 1)));
  }
  model->train(was_training);
  Predictions p;
  p.logits = torch::cat(logits).clone();
  p.labels = torch::cat(labels).clone();
  p.indices = torch::cat(indices).clone();
  p.loss = loss_sum / double(std::max<std::int64_t>(n, 1));
  return p;
}

Trainer::Trainer(models::Model model, std::shared_ptr<Loader> train, std::shared_ptr<Loader> val,
                 std::shared_ptr<ProcessGroup> group)
    : model_(std::move(model)),
      train_(std::move(train)),
      val_(std::move(val)),
      group_(std::move(group)) {
  if (!model_) throw InvalidArgument("Trainer: model is null");
  if (!train_) throw InvalidArgument("Trainer: training loader is null");
  const int world = group_ ? group_->world_size() : 1;
  const int rank = group_ ? group_->rank() : 0;
  const auto& t = train_->options();
  if (t.world_size != world || t.rank != rank)
    throw InvalidArgument("Trainer: the training loader is shard " + std::to_string(t.rank) +
                          " of " + std::to_string(t.world_size) + ", but this process is rank " +
                          std::to_string(rank) + " of " + std::to_string(world));
  // A validation loader may be sharded like the training one or hold everything.
  if (val_ && val_->options().world_size != 1 &&
      (val_->options().world_size != world || val_->options().rank != rank))
    throw InvalidArgument("Trainer: the validation loader is sharded for another rank");
}

FitResult Trainer::fit(const FitOptions& o, const EpochCallback& on_epoch,
                       const BatchCallback& on_batch) {
  if (o.epochs < 0) throw InvalidArgument("epochs must be >= 0");
  if (o.label_smoothing < 0 || o.label_smoothing >= 1)
    throw InvalidArgument("label_smoothing must be in [0, 1)");
  validate(o.schedule);
  const std::int64_t classes = model_->num_classes();
  if (!o.class_weights.empty() && std::int64_t(o.class_weights.size()) != classes)
    throw InvalidArgument("class_weights has " + std::to_string(o.class_weights.size()) +
                          " entries for " + std::to_string(classes) + " classes");
  if (o.patience > 0 && !val_) throw InvalidArgument("early stopping needs validation data");
  if (o.cache_flip && !o.cache_features) throw InvalidArgument("cache_flip needs cache_features");
  if (o.patience > 0 || (o.restore_best && val_)) metric_of(EpochStats{}, o.monitor);
  auto& model = *model_;
  // Cached inputs of the trainable part: the embeddings when only the head
  // trains, else the feature maps after the frozen leading blocks.
  std::int64_t cached_blocks = 0;
  if (o.cache_features) {
    std::string trainable;
    for (const auto& item : model.named_parameters())
      if (item.value().requires_grad() && !models::has_prefix(item.key(), model.head_name()))
        trainable = item.key();
    if (!trainable.empty()) {
      cached_blocks = frozen_prefix(model);
      if (cached_blocks == 0)
        throw InvalidArgument(
            "cache_features needs the backbone, or its leading blocks, frozen; '" + trainable +
            "' is trainable and no leading block is frozen");
    }
  }
  const torch::Device device(resolve_device(o.device));
  const Amp amp = parse_amp(o.amp, device);
  model.to(device);
  if (o.channels_last) to_channels_last(model);
  const Input input(device, o.channels_last, train_->pipeline());
  auto opt = detail::make_optimizer(model, o.optimizer);
  const auto weights =
      o.class_weights.empty()
          ? torch::Tensor()
          : torch::tensor(o.class_weights, torch::kDouble).to(device, torch::kFloat);
  auto loss_options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing);
  if (weights.defined()) loss_options.weight(weights);

  FitResult result;
  Progress progress;
  models::StateDict best;
  result.resumed = load_checkpoint(o.checkpoint, o, model, *opt.optimizer, progress, best, device);
  const bool writes = !group_ || group_->rank() == 0;

  std::unique_ptr<GradientReducer> reducer;
  std::optional<BatchNormSync> batchnorm_sync;
  if (group_ && group_->world_size() > 1 && o.sync_batchnorm) batchnorm_sync.emplace(model, group_);
  // Models whose BatchNorm cannot synchronise (TorchScript) at least share running statistics.
  const bool average_batchnorm = batchnorm_sync && batchnorm_sync->layers() == 0;
  if (group_) {
    // Every rank starts from rank 0's weights, whatever its own initialisation drew.
    torch::NoGradGuard no_grad;
    auto sync = [&](const torch::Tensor& t) {
      auto copy = t.detach().contiguous();
      group_->broadcast(copy, 0, "broadcast of the initial weights");
      t.detach().copy_(copy);
    };
    for (const auto& p : model.parameters()) sync(p);
    for (const auto& b : model.buffers()) sync(b);
    std::vector<torch::Tensor> trainable;
    for (const auto& p : model.parameters())
      if (p.requires_grad()) trainable.push_back(p);
    if (!trainable.empty()) reducer = std::make_unique<GradientReducer>(group_, trainable);
  }
  // fp16's dynamic loss scale, as torch.cuda.amp.GradScaler keeps it.
  torch::Tensor scale, growth_tracker, found_inf;
  if (amp.scaled) {
    scale = torch::full({1}, 65536.0, torch::TensorOptions(device).dtype(torch::kFloat));
    growth_tracker = torch::zeros({1}, torch::TensorOptions(device).dtype(torch::kInt));
    found_inf = torch::zeros({1}, torch::TensorOptions(device).dtype(torch::kFloat));
  }

  // Frozen blocks never change during fit: compile them once.
  std::optional<LazyInference> prefix;
  int64_t prefix_blocks = 0;
  if (!o.cache_features && o.compile_frozen) {
    prefix_blocks = frozen_prefix(model);
    if (prefix_blocks > 0) prefix.emplace(model, models::InferenceOutput::kFeatures, prefix_blocks);
  }
  auto forward = [&](const torch::Tensor& x) {
    if (!prefix) return model.forward(x);
    auto f = prefix->forward(x);
    if (o.channels_last && f.dim() == 4) f = f.contiguous(torch::MemoryFormat::ChannelsLast);
    return model.classify(model.embed_from(f, prefix_blocks));
  };

  auto from_cache = [&](const torch::Tensor& cached) {
    if (cached_blocks == 0) return model.classify(cached);
    const auto f = o.channels_last ? cached.contiguous(torch::MemoryFormat::ChannelsLast) : cached;
    return model.classify(model.embed_from(f, cached_blocks));
  };
  Features train_features, val_features;
  if (o.cache_features && !progress.stopped && std::int64_t(progress.history.size()) < o.epochs) {
    train_features = cache_features(model, *train_, o.epoch_offset, o.channels_last, amp,
                                    group_.get(), cached_blocks, o.cache_flip);
    if (val_) {
      const bool sharded = val_->options().world_size > 1;
      val_features = cache_features(model, *val_, 0, o.channels_last, amp,
                                    sharded ? group_.get() : nullptr, cached_blocks);
    }
  }
  const std::int64_t batch_size = train_->options().batch_size;
  const std::int64_t steps_per_epoch = train_->num_batches();
  const std::int64_t total_steps = steps_per_epoch * o.epochs;

  for (std::int64_t epoch = std::int64_t(progress.history.size());
       epoch < o.epochs && !progress.stopped; ++epoch) {
    const auto start = Clock::now();
    // Dropout draws from torch's global generator: reseeding per epoch makes a
    // resumed run draw what the uninterrupted run drew.
    torch::manual_seed(
        mix64(o.seed ^ mix64(kDropoutStream + std::uint64_t(o.epoch_offset + epoch))));
    model.train(true);
    // Sums stay on the device: reading them every step would stall a GPU.
    auto loss_total = torch::zeros({}, torch::TensorOptions(device).dtype(torch::kDouble));
    auto correct_total = torch::zeros({}, torch::TensorOptions(device).dtype(torch::kLong));
    std::int64_t seen = 0, step = epoch * steps_per_epoch, b = 0;
    std::vector<torch::Tensor> params;
    for (auto& g : opt.optimizer->param_groups())
      params.insert(params.end(), g.params().begin(), g.params().end());
    auto train_step = [&](const torch::Tensor& logits, const torch::Tensor& labels) {
      detail::set_lr(opt, lr_factor(o.schedule, step++, total_steps, steps_per_epoch));
      const auto y = labels.to(device, /*non_blocking=*/true);
      torch::Tensor loss;
      {
        compat::AutocastGuard autocast(device.type(), amp.dtype, amp.enabled);
        loss = torch::nn::functional::cross_entropy(logits, y, loss_options);
      }
      opt.optimizer->zero_grad();
      (amp.scaled ? loss * scale : loss).backward();
      if (reducer) reducer->finish();
      bool finite = true;
      if (amp.scaled) {
        std::vector<torch::Tensor> grads;
        for (auto& p : params)
          if (p.grad().defined()) grads.push_back(p.grad());
        found_inf.zero_();
        at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, scale.reciprocal());
        finite = found_inf.item<float>() == 0;
      }
      if (o.clip_grad_norm > 0 && finite)
        torch::nn::utils::clip_grad_norm_(params, o.clip_grad_norm);
      if (finite) opt.optimizer->step();
      if (amp.scaled) at::_amp_update_scale_(scale, growth_tracker, found_inf, 2.0, 0.5, 2000);
      const auto n = y.size(0);
      loss_total += loss.detach().to(torch::kDouble) * double(n);
      correct_total += logits.detach().argmax(1).eq(y).sum();
      seen += n;
      ++b;
      // On a GPU the running loss costs a synchronisation: report it every 16 batches.
      if (on_batch && (!device.is_cuda() || b % 16 == 0 || b == steps_per_epoch))
        on_batch(b, steps_per_epoch, loss_total.item<double>() / double(seen));
    };
    if (o.cache_features) {
      // Replays the loader's own batches, so the result equals the slow path's.
      const auto order = train_->epoch_indices(o.epoch_offset + epoch);
      for (std::size_t i = 0; i < order.size(); i += std::size_t(batch_size)) {
        const std::size_t end = std::min(order.size(), i + std::size_t(batch_size));
        std::vector<std::int64_t> rows;
        std::vector<std::uint8_t> mirror;
        for (std::size_t k = i; k < end; ++k) {
          const std::int64_t r = train_features.row_of[std::size_t(order[k])];
          if (r < 0) continue;  // a corrupt sample the loader skipped
          rows.push_back(r);
          if (o.cache_flip) {
            Rng rng(train_->options().seed, std::uint64_t(o.epoch_offset + epoch),
                    std::uint64_t(order[k]));
            mirror.push_back(rng.bernoulli(0.5));
          }
        }
        if (rows.empty()) continue;
        const auto idx = torch::tensor(rows, torch::kLong).to(device);
        auto x = train_features.embeddings.index_select(0, idx);
        if (o.cache_flip) {
          std::vector<std::int64_t> shape(std::size_t(x.dim()), 1);
          shape[0] = std::int64_t(mirror.size());
          const auto m =
              torch::from_blob(mirror.data(), shape, torch::kBool).to(device, false, true);
          x = torch::where(m, train_features.flipped.index_select(0, idx), x);
        }
        torch::Tensor logits;
        {
          compat::AutocastGuard autocast(device.type(), amp.dtype, amp.enabled);
          logits = from_cache(x);
        }
        train_step(logits, train_features.labels.index_select(0, idx));
      }
    } else {
      train_->start_epoch(o.epoch_offset + epoch);
      while (auto batch = train_->next()) {
        torch::Tensor logits;
        {
          compat::AutocastGuard autocast(device.type(), amp.dtype, amp.enabled);
          logits = forward(input(batch->images));
        }
        train_step(logits, batch->labels);
      }
    }
    if (average_batchnorm) average_batchnorm_statistics(model, *group_);

    auto totals = torch::tensor(
        {loss_total.item<double>(), double(correct_total.item<std::int64_t>()), double(seen)},
        torch::kDouble);
    if (group_) group_->all_reduce_sum(totals, "summing the epoch's training metrics");
    const double all_seen = std::max(totals[2].item<double>(), 1.0);

    EpochStats s;
    s.epoch = epoch;
    s.phase = o.phase;
    s.train_loss = totals[0].item<double>() / all_seen;
    s.train_accuracy = totals[1].item<double>() / all_seen;
    s.lr = opt.optimizer->param_groups().front().options().get_lr();
    if (val_) {
      Predictions p;
      if (o.cache_features) {
        torch::InferenceMode guard;
        model.eval();
        std::vector<torch::Tensor> parts;
        for (const auto& chunk : val_features.embeddings.split(256)) {
          compat::AutocastGuard autocast(device.type(), amp.dtype, amp.enabled);
          parts.push_back(from_cache(chunk).to(torch::kCPU, torch::kFloat));
        }
        p.logits = torch::cat(parts);
        p.labels = val_features.labels.cpu();
        p.loss = torch::nn::functional::cross_entropy(p.logits, p.labels).item<double>();
      } else {
        p = predict(model_, *val_, o.channels_last, false, nullptr, true, o.amp);
        if (group_ && val_->options().world_size > 1) p = gather_predictions(*group_, p);
      }
      score(p, classes, s);
    }
    s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    s.images_per_second = all_seen / std::max(s.seconds, 1e-9);
    progress.history.push_back(s);

    if (s.has_val) {
      const double metric = metric_of(s, o.monitor);
      if (metric > progress.best_metric) {
        progress.best_metric = metric;
        progress.best_epoch = epoch;
        progress.bad_epochs = 0;
        if (o.restore_best) best = snapshot(model);
      } else if (o.patience > 0 && ++progress.bad_epochs >= o.patience) {
        progress.stopped = true;
      }
    }
    bool go_on = on_epoch ? on_epoch(s) : true;
    if (group_) {
      // Any rank's callback may stop the run; all ranks must stop together.
      auto stop = torch::tensor({go_on ? 0.0 : 1.0}, torch::kDouble);
      group_->all_reduce_sum(stop, "agreeing on whether to stop");
      go_on = stop.item<double>() == 0;
    }
    if (!go_on) progress.stopped = true;
    if (!o.checkpoint.empty()) {
      if (writes) save_checkpoint(o.checkpoint, o, model, *opt.optimizer, progress, best);
      if (group_) group_->barrier("waiting for rank 0's checkpoint");
    }
  }
  if (o.restore_best && progress.best_epoch >= 0 && !best.empty()) restore(model, best);
  result.history = progress.history;
  result.best_epoch = progress.best_epoch;
  result.stopped_early = progress.stopped;
  return result;
}

}  // namespace tlcore
