#include "data_parallel.h"

#include <vector>

namespace tlcore::detail {
namespace {

// Every rank starts from rank 0's weights, whatever its own initialisation drew.
void broadcast_weights(models::ModelImpl& model, ProcessGroup& group) {
  torch::NoGradGuard no_grad;
  auto sync = [&](const torch::Tensor& t) {
    auto copy = t.detach().contiguous();
    group.broadcast(copy, 0, "broadcast of the initial weights");
    t.detach().copy_(copy);
  };
  for (const auto& p : model.parameters()) sync(p);
  for (const auto& b : model.buffers()) sync(b);
}

}  // namespace

DataParallel::DataParallel(models::ModelImpl& model, std::shared_ptr<ProcessGroup> group,
                           bool sync_batchnorm)
    : model_(model), group_(std::move(group)) {
  if (!group_) return;
  if (group_->world_size() > 1 && sync_batchnorm) batchnorm_sync_.emplace(model_, group_);
  average_batchnorm_ = batchnorm_sync_ && batchnorm_sync_->layers() == 0;
  broadcast_weights(model_, *group_);
  std::vector<torch::Tensor> trainable;
  for (const auto& p : model_.parameters())
    if (p.requires_grad()) trainable.push_back(p);
  if (!trainable.empty()) reducer_ = std::make_unique<GradientReducer>(group_, trainable);
}

void DataParallel::average_gradients() {
  if (reducer_) reducer_->finish();
}

void DataParallel::end_epoch() {
  if (average_batchnorm_) average_batchnorm_statistics(model_, *group_);
}

void DataParallel::sum(torch::Tensor& t, const std::string& what) {
  if (group_) group_->all_reduce_sum(t, what);
}

bool DataParallel::all_go_on(bool go_on) {
  if (!group_) return go_on;
  auto stop = torch::tensor({go_on ? 0.0 : 1.0}, torch::kDouble);
  group_->all_reduce_sum(stop, "agreeing on whether to stop");
  return stop.item<double>() == 0;
}

void DataParallel::on_first_rank(const std::function<void()>& write, const std::string& what) {
  if (!group_ || group_->rank() == 0) write();
  if (group_) group_->barrier(what);
}

}  // namespace tlcore::detail
