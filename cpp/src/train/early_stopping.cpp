#include "early_stopping.h"

#include <torch/torch.h>

#include "tlcore/error.h"

namespace tlcore::detail {
namespace {

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

}  // namespace

double monitored_metric(const EpochStats& s, const std::string& monitor) {
  if (monitor == "val_accuracy") return s.val_accuracy;
  if (monitor == "val_f1") return s.val_f1;
  if (monitor == "val_loss") return -s.val_loss;
  throw InvalidArgument("unknown monitor '" + monitor +
                        "' (known: val_accuracy, val_f1, val_loss)");
}

void record_epoch(Progress& progress, const EpochStats& s, const FitOptions& o,
                  const models::ModelImpl& model) {
  progress.history.push_back(s);
  if (!s.has_val) return;
  const double metric = monitored_metric(s, o.monitor);
  if (metric > progress.best_metric) {
    progress.best_metric = metric;
    progress.best_epoch = s.epoch;
    progress.bad_epochs = 0;
    if (o.restore_best) progress.best = snapshot(model);
  } else if (o.patience > 0 && ++progress.bad_epochs >= o.patience) {
    progress.stopped = true;
  }
}

void restore_best(models::ModelImpl& model, const Progress& progress, const FitOptions& o) {
  if (o.restore_best && progress.best_epoch >= 0 && !progress.best.empty())
    restore(model, progress.best);
}

models::StateDict snapshot(const models::ModelImpl& model) {
  auto state = model.state_dict();
  for (auto& item : state) item.second = item.second.detach().clone();
  return state;
}

}  // namespace tlcore::detail
