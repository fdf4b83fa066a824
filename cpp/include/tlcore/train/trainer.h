// The training engine: epochs over the C++ loader with Adam/AdamW/SGD,
// schedules with warm-up, discriminative learning rates, gradient clipping,
// label smoothing, class weights, early stopping with best-weight restore,
// feature caching for frozen backbones, and an atomic checkpoint after every
// epoch from which a killed run resumes to the same result. The parts live in
// cpp/src/train/: train_one_epoch.cpp, evaluate.cpp, feature_cache.cpp,
// fit_checkpoint.cpp, mixed_precision.cpp, class_weights.cpp, data_parallel.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "tlcore/device.h"
#include "tlcore/loader.h"
#include "tlcore/models/model.h"
#include "tlcore/train/distributed.h"
#include "tlcore/train/predict.h"
#include "tlcore/train/schedule.h"

namespace tlcore {

struct OptimizerOptions {
  std::string name = "adam";  // adam | adamw | sgd
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum = 0.9;  // sgd
  bool nesterov = false;  // sgd
  double beta1 = 0.9;     // adam, adamw
  double beta2 = 0.999;
  double eps = 1e-8;
  // Discriminative rates: the head trains at lr, the last trainable block at
  // lr * layer_decay, the one before at lr * layer_decay^2, and so on.
  double layer_decay = 1.0;
};

struct FitOptions {
  std::int64_t epochs = 1;
  std::string phase = "fit";  // names the phase in the history and the checkpoint
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  double clip_grad_norm = 0.0;  // 0: off
  double label_smoothing = 0.0;
  std::vector<double> class_weights;  // empty: unweighted
  // Early stopping on the validation metric ("val_accuracy", "val_f1" or "val_loss").
  std::string monitor = "val_accuracy";
  std::int64_t patience = 0;  // 0: off
  bool restore_best = true;   // end with the best epoch's weights (needs validation data)
  // Compute once what the frozen part of the model hands the trainable part: the
  // embeddings when only the head trains, else the feature maps after the frozen
  // leading blocks; then train on those. The loader's pipeline must be
  // deterministic for the result to equal the slow path.
  bool cache_features = false;
  // With cache_features: cache the mirrored images' features too, and train each
  // sample on the mirror with probability 0.5, drawn per (seed, epoch, index) as
  // the loader draws a RandomHorizontalFlip(0.5) placed after deterministic ops.
  // The one augmentation a cache can keep exact, at twice the caching pass.
  bool cache_flip = false;
  // With cache_features and a cached feature map: move each training sample's map
  // by up to this many cells each way (zero fill), drawn per (seed, epoch, index):
  // a random translation the cache can apply cheaply, after the frozen blocks. One
  // cell of a stride-16 map is 16 input pixels. 0: off.
  std::int64_t cache_shift = 0;
  // With cache_features: how the rows are stored: "auto" (bf16 under amp="bf16",
  // else float32), "float32", "bfloat16" or "float16" (half the memory; the tail
  // still computes in float32 without amp).
  std::string cache_dtype = "auto";
  // With cache_features: the memory the rows may take ("4GB", "512MiB"; "": no
  // cap). Rows above it go to a memory-mapped file in cache_dir, which a later fit
  // with the same model weights, data, pipeline and options reuses instead of
  // computing; a file made by anything else is stale, deleted and made again.
  // One process only: a distributed run gathers every rank's rows in memory.
  std::string cache_memory;
  std::string cache_dir;  // "": the user's cache folder ($TLCORE_CACHE_DIR, ...)/features
  // Run the leading frozen blocks as a compiled inference graph (BatchNorm folded,
  // oneDNN, no autograd) and only the trainable tail under autograd. Frozen blocks
  // compute in eval mode either way, so only float rounding differs.
  bool compile_frozen = true;
  bool channels_last = true;
  // "cpu", "cuda" or "auto" (CUDA when available). On CUDA, uint8 batches (the
  // loader's uint8_output, best with pin_memory) are copied asynchronously and
  // normalised on the GPU.
  std::string device = "cpu";
  // Mixed precision: "off", "bf16", or "fp16" (CUDA only, with a dynamic loss scale).
  std::string amp = "off";
  // Distributed: BatchNorm layers in training mode normalise with the statistics of
  // all ranks' batches (torch.nn.SyncBatchNorm), so N ranks of batch B train like one
  // process with batch N*B. Layers that cannot (TorchScript models) average their
  // running statistics after every epoch instead.
  bool sync_batchnorm = true;
  std::uint64_t seed = 0;
  // Loader epochs start here, so phases of one recipe see different augmentations.
  std::int64_t epoch_offset = 0;
  std::string checkpoint;  // written after every epoch; resumed from when present
  // Seconds this fit may take, feature caching included (0: no limit). After each
  // epoch the epochs are set to what the measured pace leaves room for, up to
  // `epochs`, and the schedule is fitted to the new length. One process only.
  double time_limit = 0.0;
};

struct EpochStats {
  std::int64_t epoch = 0;  // within the phase, from 0
  std::string phase;
  double train_loss = 0, train_accuracy = 0;
  bool has_val = false;
  double val_loss = 0, val_accuracy = 0, val_f1 = 0;
  double lr = 0;  // the head's rate at the end of the epoch
  double seconds = 0, images_per_second = 0;
  std::int64_t epochs = 0;  // the phase's epochs as now planned (a time limit may cut them)
};

struct FitResult {
  std::vector<EpochStats> history;
  std::int64_t best_epoch = -1;
  bool stopped_early = false;
  bool resumed = false;
  // With cache_features: where the rows came from ("memory", "computed into FILE",
  // "reused FILE", or why a stale FILE was made again).
  std::string feature_cache;
};

// Called after every epoch; returning false stops training (after the checkpoint).
using EpochCallback = std::function<bool(const EpochStats&)>;

class Trainer {
 public:
  // `val` may be null (no validation metrics, no early stopping). With a process
  // group, this process is one rank of a data-parallel run: both loaders must be
  // sharded for this rank (LoaderOptions rank/world_size); gradients are averaged
  // across ranks, metrics are computed over all ranks' samples, and only rank 0
  // writes the checkpoint.
  Trainer(models::Model model, std::shared_ptr<Loader> train, std::shared_ptr<Loader> val,
          std::shared_ptr<ProcessGroup> group = nullptr);

  FitResult fit(const FitOptions& options, const EpochCallback& on_epoch = nullptr,
                const BatchCallback& on_batch = nullptr);

  models::Model model() const { return model_; }

 private:
  models::Model model_;
  std::shared_ptr<Loader> train_;
  std::shared_ptr<Loader> val_;
  std::shared_ptr<ProcessGroup> group_;
};

// "balanced" class weights as scikit-learn computes them: n / (k * count_c).
std::vector<double> balanced_class_weights(const std::vector<std::int64_t>& labels,
                                           std::int64_t num_classes);

}  // namespace tlcore
