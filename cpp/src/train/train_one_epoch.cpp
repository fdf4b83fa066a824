#include "train_one_epoch.h"

#include <algorithm>
#include <vector>

#include "../core/torch_compat.h"
#include "tlcore/augment/rng.h"

namespace tlcore::detail {
namespace {

constexpr std::uint64_t kDropoutStream = 0x44524f504f5554ULL;

// On a GPU the running loss costs a synchronisation: it is reported every this many batches.
constexpr std::int64_t kGpuReportEvery = 16;

std::vector<torch::Tensor> optimized_parameters(torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> params;
  for (auto& g : optimizer.param_groups())
    params.insert(params.end(), g.params().begin(), g.params().end());
  return params;
}

// One optimisation step on the loss of `logits`: backward, averaged over ranks,
// unscaled (fp16), clipped, applied unless a gradient overflowed. Returns the loss.
torch::Tensor step(Optimization& opt, const std::vector<torch::Tensor>& params,
                   const torch::Tensor& logits, const torch::Tensor& y) {
  torch::Tensor loss;
  {
    compat::AutocastGuard autocast(opt.device.type(), opt.amp.dtype, opt.amp.enabled);
    loss = torch::nn::functional::cross_entropy(logits, y, opt.loss);
  }
  auto& optimizer = *opt.optimizer.optimizer;
  optimizer.zero_grad();
  opt.scaler.scale(loss).backward();
  opt.parallel.average_gradients();
  const bool finite = opt.scaler.unscale(params);
  if (opt.clip_grad_norm > 0 && finite)
    torch::nn::utils::clip_grad_norm_(params, opt.clip_grad_norm);
  if (finite) optimizer.step();
  opt.scaler.update();
  return loss;
}

}  // namespace

TrainMetrics train_one_epoch(models::ModelImpl& model, TrainingData& data, Optimization& opt,
                             std::int64_t epoch, std::int64_t loader_epoch, std::uint64_t seed,
                             const BatchCallback& on_batch) {
  // Dropout draws from torch's global generator: reseeding per epoch makes a
  // resumed run draw what the uninterrupted run drew.
  torch::manual_seed(mix64(seed ^ mix64(kDropoutStream + std::uint64_t(loader_epoch))));
  model.train(true);
  // Sums stay on the device: reading them every step would stall a GPU.
  auto loss_total = torch::zeros({}, torch::TensorOptions(opt.device).dtype(torch::kDouble));
  auto correct_total = torch::zeros({}, torch::TensorOptions(opt.device).dtype(torch::kLong));
  std::int64_t seen = 0, step_in_fit = epoch * opt.steps_per_epoch, b = 0;
  const auto params = optimized_parameters(*opt.optimizer.optimizer);
  data.start_epoch(loader_epoch);
  while (auto batch = data.next()) {
    torch::Tensor logits;
    {
      compat::AutocastGuard autocast(opt.device.type(), opt.amp.dtype, opt.amp.enabled);
      logits = data.forward(batch->input);
    }
    set_lr(opt.optimizer,
           lr_factor(opt.schedule, step_in_fit++, opt.total_steps, opt.steps_per_epoch));
    const auto y = batch->labels.to(opt.device, /*non_blocking=*/true);
    const auto loss = step(opt, params, logits, y);
    const auto n = y.size(0);
    loss_total += loss.detach().to(torch::kDouble) * double(n);
    correct_total += logits.detach().argmax(1).eq(y).sum();
    seen += n;
    ++b;
    if (on_batch && (!opt.device.is_cuda() || b % kGpuReportEvery == 0 || b == opt.steps_per_epoch))
      on_batch(b, opt.steps_per_epoch, loss_total.item<double>() / double(seen));
  }
  opt.parallel.end_epoch();

  auto totals = torch::tensor(
      {loss_total.item<double>(), double(correct_total.item<std::int64_t>()), double(seen)},
      torch::kDouble);
  opt.parallel.sum(totals, "summing the epoch's training metrics");
  TrainMetrics m;
  m.samples = std::max(totals[2].item<double>(), 1.0);
  m.loss = totals[0].item<double>() / m.samples;
  m.accuracy = totals[1].item<double>() / m.samples;
  m.lr = opt.optimizer.optimizer->param_groups().front().options().get_lr();
  return m;
}

}  // namespace tlcore::detail
