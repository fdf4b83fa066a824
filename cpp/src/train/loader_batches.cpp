#include "loader_batches.h"

#include "evaluate.h"
#include "mixed_precision.h"

namespace tlcore::detail {

LoaderBatches::LoaderBatches(models::Model model, std::shared_ptr<Loader> train,
                             std::shared_ptr<Loader> val, std::shared_ptr<ProcessGroup> group,
                             const FitOptions& o)
    : model_(std::move(model)),
      train_(std::move(train)),
      val_(std::move(val)),
      group_(std::move(group)),
      channels_last_(o.channels_last),
      amp_(o.amp),
      input_(model_device(*model_), o.channels_last, train_->pipeline()) {
  if (o.compile_frozen) prefix_blocks_ = frozen_prefix(*model_);
  if (prefix_blocks_ > 0)
    prefix_.emplace(*model_, models::InferenceOutput::kFeatures, prefix_blocks_,
                    graph_precision(parse_amp(o.amp, input_.device()), input_.device()));
}

void LoaderBatches::start_epoch(std::int64_t epoch) { train_->start_epoch(epoch); }

std::optional<TrainingBatch> LoaderBatches::next() {
  auto batch = train_->next();
  if (!batch) return std::nullopt;
  return TrainingBatch{input_(batch->images), batch->labels};
}

torch::Tensor LoaderBatches::forward(const torch::Tensor& x) {
  if (!prefix_) return model_->forward(x);
  auto f = prefix_->forward(x);
  if (channels_last_ && f.dim() == 4) f = f.contiguous(torch::MemoryFormat::ChannelsLast);
  return model_->classify(model_->embed_from(f, prefix_blocks_));
}

Predictions LoaderBatches::validate() {
  auto p = predict(model_, *val_, channels_last_, false, nullptr, true, amp_);
  if (group_ && val_->options().world_size > 1) p = gather_predictions(*group_, p);
  return p;
}

}  // namespace tlcore::detail
