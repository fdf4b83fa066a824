#include "lazy_inference.h"

#include <algorithm>

#include "tlcore/error.h"

namespace tlcore::detail {

torch::Tensor LazyInference::forward(const torch::Tensor& x) {
  const bool square = x.dim() == 4 && x.size(2) == x.size(3);
  // The compiled graph is a CPU (oneDNN) optimisation: CUDA runs the eager model.
  if (!compiled_ && square && !failed_ && !x.is_cuda()) {
    const bool was_training = model_.is_training();
    try {
      compiled_.emplace(std::static_pointer_cast<models::ModelImpl>(model_.shared_from_this()),
                        x.size(2), output_, blocks_, precision_, int8_);
    } catch (const Error&) {
      failed_ = true;  // e.g. a graph oneDNN cannot run: the eager path is still right
    }
    model_.train(was_training);
  }
  if (compiled_ && square && x.size(2) == compiled_->image_size()) return compiled_->forward(x);
  return forward_eager(x);
}

torch::Tensor LazyInference::forward_eager(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  switch (output_) {
    case models::InferenceOutput::kLogits:
      return model_.forward(x);
    case models::InferenceOutput::kEmbedding:
      return model_.embed(x);
    case models::InferenceOutput::kFeatures:
      break;
  }
  return model_.features(x, blocks_);
}

std::int64_t frozen_prefix(const models::ModelImpl& model) {
  std::int64_t k = 0;
  for (const auto& block : model.blocks()) {
    if (!model.is_frozen(block.name)) break;
    ++k;
  }
  return std::min(k, model.splittable_blocks());
}

}  // namespace tlcore::detail
