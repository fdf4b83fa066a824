// Mixed precision: which autocast dtype a FitOptions/predict `amp` string names,
// and fp16's dynamic loss scale (private to train/).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tlcore/models/precision.h"

namespace tlcore::detail {

struct Amp {
  bool enabled = false;
  torch::ScalarType dtype = torch::kFloat;
  bool scaled = false;  // fp16 needs a loss scale; bf16 has float32's range
};

// "off" (or ""), "bf16", or "fp16" (CUDA only); throws InvalidArgument otherwise.
Amp parse_amp(const std::string& amp, torch::Device device);

// The precision of the compiled graphs (a frozen prefix, validation) under `amp`:
// bf16 on a CPU with bf16 instructions, else float32 (autocast covers the rest).
models::Precision graph_precision(const Amp& amp, torch::Device device);

// torch.cuda.amp.GradScaler's defaults.
struct LossScaleOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;
};

// fp16's dynamic loss scale, kept as torch.cuda.amp.GradScaler keeps it: the
// loss is multiplied by the scale before backward so small gradients survive in
// fp16; a step whose gradients hold an inf or NaN is skipped and the scale
// multiplied by backoff_factor; growth_interval finite steps in a row multiply
// it by growth_factor. The state stays on the device: only the finite check
// reads it back. Disabled (bf16, float32), every method leaves things as they are.
class LossScaler {
 public:
  LossScaler(bool enabled, torch::Device device, const LossScaleOptions& options = {});

  bool enabled() const { return enabled_; }
  // What to call backward() on.
  torch::Tensor scale(const torch::Tensor& loss) const;
  // Divides the gradients of `params` by the scale; false when any of them is
  // not finite (the optimizer step must then be skipped).
  bool unscale(const std::vector<torch::Tensor>& params);
  // After every step: backs off after an overflow, grows after a run of finite steps.
  void update();
  double value() const;  // the current scale (reads it back from the device)

 private:
  bool enabled_;
  LossScaleOptions options_;
  torch::Tensor scale_, growth_tracker_, found_inf_;
};

}  // namespace tlcore::detail
