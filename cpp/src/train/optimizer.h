// Builds the optimizer with one parameter group per trainable block (private to train/).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "tlcore/models/model.h"
#include "tlcore/train/trainer.h"

namespace tlcore::detail {

struct OptimizerWithGroups {
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  // Base learning rate of each parameter group, before the schedule's factor.
  std::vector<double> base_lr;
};

OptimizerWithGroups make_optimizer(models::ModelImpl& model, const OptimizerOptions& options);

// Sets every group's rate to its base rate times `factor`.
void set_lr(OptimizerWithGroups& opt, double factor);

}  // namespace tlcore::detail
