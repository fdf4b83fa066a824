// What a model's logits say of images, as tensors: calibrated probabilities, the
// energy, and the "unknown" rule over many images at once (prediction.h holds the
// rule for one image).
#pragma once

#include <ATen/core/Tensor.h>

#include "tlcore/infer/prediction.h"

namespace tlcore {

// What a model says of one image (probabilities: classes; energy: a scalar) or of
// many (N x classes; N).
struct Scores {
  at::Tensor probabilities;  // softmax of the logits divided by the temperature
  at::Tensor energy;         // of the raw logits (tlcore::energy)
};

// The scores of raw logits (classes, or N x classes), the one place where the
// temperature and the energy are applied to a model's output.
Scores scores_of(const at::Tensor& logits, double temperature);

// is_unknown for each image: N confidences and N energies give N bools.
at::Tensor unknown_mask(const at::Tensor& confidence, const at::Tensor& energy,
                        const UnknownRule& rule);

}  // namespace tlcore
