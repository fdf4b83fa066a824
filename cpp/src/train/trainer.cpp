// Trainer::fit: the epoch loop over train_one_epoch and evaluate, with the
// checkpoint, the feature cache, mixed precision and data parallelism as
// collaborators (each in its own file beside this one).
#include "tlcore/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "class_weights.h"
#include "data_parallel.h"
#include "device_input.h"
#include "early_stopping.h"
#include "evaluate.h"
#include "feature_cache.h"
#include "fit_checkpoint.h"
#include "loader_batches.h"
#include "mixed_precision.h"
#include "optimizer.h"
#include "tlcore/error.h"
#include "tlcore/memory.h"
#include "time_limit.h"
#include "train_one_epoch.h"

namespace tlcore {
namespace {

using Clock = std::chrono::steady_clock;

// Throws InvalidArgument for options that are out of range or contradict each
// other, before anything is moved, loaded or computed.
void check_options(const FitOptions& o, std::int64_t num_classes, bool has_val, int world) {
  if (o.epochs < 0) throw InvalidArgument("epochs must be >= 0");
  if (o.time_limit < 0) throw InvalidArgument("time_limit must be >= 0");
  if (o.time_limit > 0 && world > 1)
    throw InvalidArgument("time_limit needs one process: ranks would disagree on the epochs");
  if (o.label_smoothing < 0 || o.label_smoothing >= 1)
    throw InvalidArgument("label_smoothing must be in [0, 1)");
  validate(o.schedule);
  detail::check_class_weights(o.class_weights, num_classes);
  if (o.patience > 0 && !has_val) throw InvalidArgument("early stopping needs validation data");
  if (o.cache_flip && !o.cache_features) throw InvalidArgument("cache_flip needs cache_features");
  if (o.cache_shift < 0) throw InvalidArgument("cache_shift must be >= 0");
  if (o.cache_shift > 0 && !o.cache_features)
    throw InvalidArgument("cache_shift needs cache_features");
  if (o.patience > 0 || (o.restore_best && has_val))
    detail::monitored_metric(EpochStats{}, o.monitor);
}

EpochStats stats_of(std::int64_t epoch, const std::string& phase,
                    const detail::TrainMetrics& train) {
  EpochStats s;
  s.epoch = epoch;
  s.phase = phase;
  s.train_loss = train.loss;
  s.train_accuracy = train.accuracy;
  s.lr = train.lr;
  return s;
}

void add_validation(EpochStats& s, const detail::ValidationScores& v) {
  s.has_val = true;
  s.val_loss = v.loss;
  s.val_accuracy = v.accuracy;
  s.val_f1 = v.f1;
}

// The feature cache when o.cache_features asks for it, else the loader's batches.
std::unique_ptr<detail::TrainingData> training_data(models::Model model,
                                                    std::shared_ptr<Loader> train,
                                                    std::shared_ptr<Loader> val,
                                                    std::shared_ptr<ProcessGroup> group,
                                                    const FitOptions& o, const detail::Amp& amp,
                                                    std::int64_t cached_blocks) {
  if (o.cache_features)
    return std::make_unique<detail::FeatureCache>(model, train, val, group, o, amp, cached_blocks);
  return std::make_unique<detail::LoaderBatches>(model, train, val, group, o);
}

}  // namespace

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
  const auto fit_start = Clock::now();
  keep_freed_memory();
  check_options(o, model_->num_classes(), val_ != nullptr, group_ ? group_->world_size() : 1);
  auto& model = *model_;
  const std::int64_t cached_blocks = o.cache_features ? detail::cached_blocks(model) : 0;
  const torch::Device device(resolve_device(o.device));
  const detail::Amp amp = detail::parse_amp(o.amp, device);
  model.to(device);
  if (o.channels_last) detail::to_channels_last(model);
  auto optimizer = detail::make_optimizer(model, o.optimizer);
  auto loss = detail::weighted_cross_entropy(o.class_weights, o.label_smoothing, device);

  FitResult result;
  detail::Progress progress;
  result.resumed =
      detail::load_checkpoint(o.checkpoint, o, model, *optimizer.optimizer, progress);
  detail::DataParallel parallel(model, group_, o.sync_batchnorm);
  detail::LossScaler scaler(amp.scaled, device);
  const std::int64_t steps = train_->num_batches();
  detail::Optimization opt{optimizer, loss,   o.schedule, o.clip_grad_norm, amp, scaler,
                           parallel,  device, steps,      steps * o.epochs};
  // Nothing is cached for a run that resumes with nothing left to train.
  const auto data = progress.done(o.epochs)
                        ? nullptr
                        : training_data(model_, train_, val_, group_, o, amp, cached_blocks);

  if (data) result.feature_cache = data->cache_report();
  std::int64_t epochs = o.epochs;  // fewer when the time limit says so
  std::vector<double> epoch_seconds;
  for (std::int64_t epoch = progress.next_epoch(); !progress.done(epochs); ++epoch) {
    const auto start = Clock::now();
    const auto trained =
        detail::train_one_epoch(model, *data, opt, epoch, o.epoch_offset + epoch, o.seed, on_batch);
    EpochStats s = stats_of(epoch, o.phase, trained);
    if (val_) add_validation(s, detail::evaluate(*data, model.num_classes()));
    s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    s.images_per_second = trained.samples / std::max(s.seconds, 1e-9);
    epoch_seconds.push_back(s.seconds);
    epochs = detail::epochs_within(o.time_limit,
                                   std::chrono::duration<double>(Clock::now() - fit_start).count(),
                                   detail::epoch_pace(epoch_seconds), epoch + 1, o.epochs);
    opt.total_steps = steps * epochs;
    s.epochs = epochs;
    detail::record_epoch(progress, s, o, model);

    if (!parallel.all_go_on(on_epoch ? on_epoch(s) : true)) progress.stopped = true;
    if (!o.checkpoint.empty())
      parallel.on_first_rank(
          [&] { detail::save_checkpoint(o.checkpoint, o, model, *optimizer.optimizer, progress); },
          "waiting for rank 0's checkpoint");
  }
  detail::restore_best(model, progress, o);
  result.history = progress.history;
  result.best_epoch = progress.best_epoch;
  result.stopped_early = progress.stopped;
  return result;
}

}  // namespace tlcore
