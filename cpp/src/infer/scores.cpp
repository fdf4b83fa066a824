#include "tlcore/infer/scores.h"

#include <torch/torch.h>

#include "tlcore/error.h"

namespace tlcore {

Scores scores_of(const at::Tensor& logits, double temperature) {
  if (!(temperature > 0)) throw InvalidArgument("scores: temperature must be positive");
  const auto rows = logits.to(torch::kFloat).contiguous().view({-1, logits.size(-1)});
  auto energy = torch::empty({rows.size(0)});
  auto* out = energy.data_ptr<float>();
  for (int64_t i = 0; i < rows.size(0); ++i)
    out[i] = static_cast<float>(tlcore::energy(rows[i].data_ptr<float>(), rows.size(1)));
  return {torch::softmax(logits.to(torch::kFloat) / temperature, -1),
          logits.dim() == 1 ? energy[0] : energy};
}

at::Tensor unknown_mask(const at::Tensor& confidence, const at::Tensor& energy,
                        const UnknownRule& rule) {
  const auto c = confidence.to(torch::kDouble).contiguous();
  const auto e = energy.to(torch::kDouble).contiguous();
  if (c.dim() != 1 || !c.sizes().equals(e.sizes()))
    throw InvalidArgument("unknown_mask: expected one confidence and one energy per image");
  auto mask = torch::empty({c.size(0)}, torch::kBool);
  for (int64_t i = 0; i < c.size(0); ++i)
    mask.data_ptr<bool>()[i] = is_unknown(c.data_ptr<double>()[i], e.data_ptr<double>()[i], rule);
  return mask;
}

}  // namespace tlcore
