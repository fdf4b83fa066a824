// Training straight from the loader (private to train/): each batch goes to the
// device, through the frozen leading blocks (compiled once, since they never
// change during a fit) and then the trainable rest under autograd.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "device_input.h"
#include "lazy_inference.h"
#include "tlcore/loader.h"
#include "tlcore/train/distributed.h"
#include "training_data.h"

namespace tlcore::detail {

class LoaderBatches : public TrainingData {
 public:
  // `val` may be null; `group` gathers a sharded validation loader's predictions.
  LoaderBatches(models::Model model, std::shared_ptr<Loader> train, std::shared_ptr<Loader> val,
                std::shared_ptr<ProcessGroup> group, const FitOptions& options);

  void start_epoch(std::int64_t epoch) override;
  std::optional<TrainingBatch> next() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  Predictions validate() override;

 private:
  models::Model model_;
  std::shared_ptr<Loader> train_, val_;
  std::shared_ptr<ProcessGroup> group_;
  bool channels_last_;
  std::string amp_;
  DeviceInput input_;
  std::optional<LazyInference> prefix_;  // the frozen leading blocks, compiled
  std::int64_t prefix_blocks_ = 0;
};

}  // namespace tlcore::detail
