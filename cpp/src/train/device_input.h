// Getting batches onto the model's device (private to train/).
#pragma once

#include <torch/torch.h>

#include "tlcore/augment/pipeline.h"
#include "tlcore/models/model.h"

namespace tlcore::detail {

// 4-D weights in channels-last order, the layout oneDNN and cuDNN convolve fastest.
void to_channels_last(models::ModelImpl& model);

// Where the model's parameters are (the CPU for a model without any).
torch::Device model_device(const models::ModelImpl& model);

// Moves a batch to the model's device and normalises uint8 batches there, so
// a GPU receives a quarter of the bytes and does the arithmetic itself.
class DeviceInput {
 public:
  DeviceInput(torch::Device device, bool channels_last, const Pipeline& pipeline);

  torch::Tensor operator()(const torch::Tensor& images) const;
  torch::Device device() const { return device_; }

 private:
  torch::Device device_;
  bool channels_last_;
  torch::Tensor mean_, std_;  // undefined when the pipeline does not normalise
};

}  // namespace tlcore::detail
