// predict(): a model's logits over one epoch of a loader, for reports and validation.
#include <torch/torch.h>

#include <algorithm>
#include <optional>

#include "../core/torch_compat.h"
#include "device_input.h"
#include "lazy_inference.h"
#include "mixed_precision.h"
#include "tlcore/memory.h"
#include "tlcore/train/predict.h"

namespace tlcore {
namespace {

// The mean of the softmax of the batch and of its mirror image, as log-probabilities.
torch::Tensor flip_average(const torch::Tensor& both) {
  return ((torch::softmax(both[0], 1) + torch::softmax(both[1], 1)) / 2).log();
}

}  // namespace

Predictions predict(models::Model model, Loader& loader, bool channels_last, bool flip_tta,
                    const BatchCallback& on_batch, bool compiled, const std::string& amp_name,
                    models::Precision precision, const models::Int8Calibration& int8) {
  torch::InferenceMode guard;
  keep_freed_memory();
  const bool was_training = model->is_training();
  model->eval();
  if (channels_last) detail::to_channels_last(*model);
  const detail::DeviceInput input(detail::model_device(*model), channels_last, loader.pipeline());
  const detail::Amp amp = detail::parse_amp(amp_name, input.device());
  std::optional<detail::LazyInference> fast;
  if (precision == models::Precision::kFloat32)
    precision = detail::graph_precision(amp, input.device());
  if (compiled) fast.emplace(*model, models::InferenceOutput::kLogits, 0, precision, int8);
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
    if (flip_tta) out = flip_average(out);
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

}  // namespace tlcore
