#include "tlcore/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "tlcore/error.h"

namespace tlcore {
namespace {

constexpr double kPi = 3.14159265358979323846;

double cosine(double from, double to, double t) {
  return to + (from - to) * 0.5 * (1 + std::cos(kPi * t));
}

}  // namespace

void validate(const ScheduleOptions& o) {
  if (o.name != "constant" && o.name != "step" && o.name != "cosine" && o.name != "onecycle")
    throw InvalidArgument("unknown learning-rate schedule '" + o.name +
                          "' (known: constant, step, cosine, onecycle)");
  if (o.warmup_epochs < 0) throw InvalidArgument("warmup_epochs must be >= 0");
  if (o.name == "step" && o.step_epochs <= 0) throw InvalidArgument("step_epochs must be > 0");
  if (o.name == "onecycle" && (o.pct_start <= 0 || o.pct_start >= 1))
    throw InvalidArgument("onecycle pct_start must be in (0, 1)");
}

double lr_factor(const ScheduleOptions& o, std::int64_t step, std::int64_t total_steps,
                 std::int64_t steps_per_epoch) {
  validate(o);
  const double total = double(std::max<std::int64_t>(total_steps, 1));
  const double per_epoch = double(std::max<std::int64_t>(steps_per_epoch, 1));
  const double s = double(step);
  if (o.name == "onecycle") {
    // torch.optim.lr_scheduler.OneCycleLR with cosine annealing, as factors of max_lr.
    const double initial = 1.0 / o.div_factor;
    const double final_ = initial / o.final_div_factor;
    const double up = o.pct_start * total - 1;
    if (s <= up) return cosine(initial, 1.0, up > 0 ? s / up : 1.0);
    const double down = total - 1 - up;
    return cosine(1.0, final_, down > 0 ? std::min(1.0, (s - up) / down) : 1.0);
  }
  const double warmup = o.warmup_epochs * per_epoch;
  double factor = 1.0;
  if (o.name == "step") {
    factor = std::pow(o.gamma, std::floor(s / (o.step_epochs * per_epoch)));
  } else if (o.name == "cosine") {
    const double span = std::max(total - warmup, 1.0);
    factor = cosine(1.0, o.min_factor, std::clamp((s - warmup) / span, 0.0, 1.0));
  }
  if (s < warmup) factor *= o.warmup_start + (1 - o.warmup_start) * s / warmup;
  return factor;
}

}  // namespace tlcore
