#include "batchnorm_sync.h"

#include <string>
#include <vector>

namespace tlcore::detail {
namespace {

bool ends_with(const std::string& name, const std::string& tail) {
  return name.size() >= tail.size() &&
         name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

BatchNormSync::BatchNormSync(models::ModelImpl& model, std::shared_ptr<ProcessGroup> group)
    : model_(model) {
  layers_ = model_.sync_batchnorm([group = std::move(group)](torch::Tensor& t) {
    group->all_reduce_sum(t, "synchronising BatchNorm statistics");
  });
}

BatchNormSync::~BatchNormSync() { model_.sync_batchnorm(nullptr); }

void average_batchnorm_statistics(models::ModelImpl& model, ProcessGroup& group) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> stats;
  for (auto& item : model.named_buffers())
    if (ends_with(item.key(), "running_mean") || ends_with(item.key(), "running_var"))
      stats.push_back(item.value());
  if (stats.empty()) return;
  // One collective for all layers: packed into a flat float32 tensor on the CPU.
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

}  // namespace tlcore::detail
