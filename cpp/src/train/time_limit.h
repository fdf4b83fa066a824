// How many epochs a time limit leaves room for, from the pace measured so far
// (private to train/).
#pragma once

#include <cstdint>

namespace tlcore::detail {

// The epochs a fit should run in all: `planned`, or fewer when `done` epochs took
// `elapsed_s` (feature caching included), the slowest took `epoch_s`, and the whole
// fit may take `limit_s`. Never fewer than `done`; `limit_s` <= 0 means no limit.
std::int64_t epochs_within(double limit_s, double elapsed_s, double epoch_s, std::int64_t done,
                           std::int64_t planned);

}  // namespace tlcore::detail
