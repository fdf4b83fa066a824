#include "time_limit.h"

#include <algorithm>
#include <cmath>

namespace tlcore::detail {

std::int64_t epochs_within(double limit_s, double elapsed_s, double epoch_s, std::int64_t done,
                           std::int64_t planned) {
  if (limit_s <= 0 || epoch_s <= 0 || done >= planned) return planned;
  const double room = std::floor((limit_s - elapsed_s) / epoch_s);
  const auto more = room > 0 ? static_cast<std::int64_t>(std::min(room, double(planned))) : 0;
  return std::clamp(done + more, done, planned);
}

}  // namespace tlcore::detail
