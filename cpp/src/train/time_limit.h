// How many epochs a time limit leaves room for, from the pace measured so far
// (private to train/).
#pragma once

#include <cstdint>
#include <vector>

namespace tlcore::detail {

// The seconds the next epochs are taken to last, from this fit's epochs so far: the
// slowest of the last three, leaving out the first once there are others. The first
// pays the warm-up, and a slow moment of a shared machine's passes: on a Xeon, one
// Fashion-MNIST run's first epoch took 88 s and the rest 52-57, and pacing by it cut
// 10 planned epochs to 6: 399 s of a 10-minute budget used.
double epoch_pace(const std::vector<double>& epoch_seconds);

// The epochs a fit should run in all: as many as fit in `limit_s` at `epoch_s` each
// after `elapsed_s` (feature caching included), never fewer than `done` nor more than
// `most`; `most` when `limit_s` <= 0 (no limit).
std::int64_t epochs_within(double limit_s, double elapsed_s, double epoch_s, std::int64_t done,
                           std::int64_t most);

}  // namespace tlcore::detail
