#include "device_input.h"

#include <string>

#include "tlcore/error.h"
#include "tlcore/train/trainer.h"

namespace tlcore {
namespace detail {

void to_channels_last(models::ModelImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
}

torch::Device model_device(const models::ModelImpl& model) {
  const auto params = model.parameters();
  return params.empty() ? torch::Device(torch::kCPU) : params.front().device();
}

DeviceInput::DeviceInput(torch::Device device, bool channels_last, const Pipeline& pipeline)
    : device_(device), channels_last_(channels_last) {
  if (!pipeline.mean().empty()) {
    const auto c = static_cast<std::int64_t>(pipeline.mean().size());
    mean_ = torch::tensor(pipeline.mean()).view({1, c, 1, 1}).to(device);
    std_ = torch::tensor(pipeline.std()).view({1, c, 1, 1}).to(device);
  }
}

torch::Tensor DeviceInput::operator()(const torch::Tensor& images) const {
  auto x = images.to(device_, /*non_blocking=*/true);
  if (x.scalar_type() == torch::kByte) {
    x = x.to(torch::kFloat).div_(255);
    if (mean_.defined()) x.sub_(mean_).div_(std_);
  }
  return channels_last_ && x.dim() == 4 ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
}

}  // namespace detail

}  // namespace tlcore
