#include "optimizer.h"

#include <cmath>

#include "tlcore/error.h"

namespace tlcore::detail {
namespace {

std::unique_ptr<torch::optim::OptimizerOptions> group_options(const OptimizerOptions& o,
                                                              double lr) {
  if (o.name == "adam" || o.name == "adamw") {
    if (o.name == "adam") {
      return std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(lr)
                                                             .betas({o.beta1, o.beta2})
                                                             .eps(o.eps)
                                                             .weight_decay(o.weight_decay));
    }
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr)
                                                            .betas({o.beta1, o.beta2})
                                                            .eps(o.eps)
                                                            .weight_decay(o.weight_decay));
  }
  if (o.name == "sgd") {
    return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(lr)
                                                          .momentum(o.momentum)
                                                          .nesterov(o.nesterov)
                                                          .weight_decay(o.weight_decay));
  }
  throw InvalidArgument("unknown optimizer '" + o.name + "' (known: adam, adamw, sgd)");
}

}  // namespace

OptimizerWithGroups make_optimizer(models::ModelImpl& model, const OptimizerOptions& o) {
  if (!(o.lr > 0)) throw InvalidArgument("learning rate must be > 0, got " + std::to_string(o.lr));
  if (o.name == "sgd" && o.nesterov && o.momentum <= 0)
    throw InvalidArgument("Nesterov momentum needs momentum > 0");
  const auto& blocks = model.blocks();
  // groups[0] is the head (and anything outside every block); groups[1 + b] is block b.
  std::vector<std::vector<torch::Tensor>> groups(blocks.size() + 1);
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    std::size_t g = 0;
    if (!models::has_prefix(item.key(), model.head_name())) {
      for (std::size_t b = 0; b < blocks.size() && g == 0; ++b)
        for (const auto& prefix : blocks[b].prefixes)
          if (models::has_prefix(item.key(), prefix)) g = b + 1;
    }
    groups[g].push_back(item.value());
  }
  OptimizerWithGroups out;
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  // Rates fall by layer_decay per trainable block counted back from the head.
  int depth = 0;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const std::size_t g = i == 0 ? 0 : groups.size() - i;  // head, then blocks from the last
    if (groups[g].empty()) continue;
    if (g != 0) ++depth;
    const double lr = o.lr * std::pow(o.layer_decay, depth);
    param_groups.emplace_back(groups[g], group_options(o, lr));
    out.base_lr.push_back(lr);
  }
  if (param_groups.empty()) throw InvalidArgument(model.arch() + ": no trainable parameters");
  auto defaults = group_options(o, o.lr);
  if (o.name == "adam") {
    out.optimizer = std::make_unique<torch::optim::Adam>(
        param_groups, static_cast<torch::optim::AdamOptions&>(*defaults));
  } else if (o.name == "adamw") {
    out.optimizer = std::make_unique<torch::optim::AdamW>(
        param_groups, static_cast<torch::optim::AdamWOptions&>(*defaults));
  } else {
    out.optimizer = std::make_unique<torch::optim::SGD>(
        param_groups, static_cast<torch::optim::SGDOptions&>(*defaults));
  }
  return out;
}

void set_lr(OptimizerWithGroups& opt, double factor) {
  auto& groups = opt.optimizer->param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i)
    groups[i].options().set_lr(opt.base_lr[i] * factor);
}

}  // namespace tlcore::detail
