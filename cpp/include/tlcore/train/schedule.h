// Learning-rate schedules as pure functions of progress, so a resumed run
// recomputes exactly the rate an uninterrupted run would have used.
#pragma once

#include <cstdint>
#include <string>

namespace tlcore {

struct ScheduleOptions {
  std::string name = "constant";  // constant | step | cosine | onecycle
  double warmup_epochs = 0;       // linear warm-up from warmup_start of the rate (not for onecycle)
  double warmup_start = 0.01;
  double step_epochs = 10;  // step: multiply by gamma every step_epochs
  double gamma = 0.1;
  double min_factor = 0.0;   // cosine: floor as a fraction of the base rate
  double pct_start = 0.3;    // onecycle: fraction of training spent rising (torch's OneCycleLR)
  double div_factor = 25.0;  // onecycle: initial rate = base / div_factor
  double final_div_factor = 1e4;  // onecycle: final rate = initial / final_div_factor
};

// Factor of the base learning rate at `step` (0-based) of `total_steps`, with
// `steps_per_epoch` steps in an epoch. Throws InvalidArgument for an unknown name.
double lr_factor(const ScheduleOptions& options, std::int64_t step, std::int64_t total_steps,
                 std::int64_t steps_per_epoch);

// Throws InvalidArgument unless the options describe a known, well-formed schedule.
void validate(const ScheduleOptions& options);

}  // namespace tlcore
