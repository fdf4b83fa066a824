#include "time_limit.h"

#include <algorithm>
#include <cmath>

namespace tlcore::detail {

double epoch_pace(const std::vector<double>& epoch_seconds) {
  if (epoch_seconds.empty()) return 0;
  if (epoch_seconds.size() == 1) return epoch_seconds.front();
  const auto from = std::max<std::ptrdiff_t>(1, std::ptrdiff_t(epoch_seconds.size()) - 3);
  return *std::max_element(epoch_seconds.begin() + from, epoch_seconds.end());
}

std::int64_t epochs_within(double limit_s, double elapsed_s, double epoch_s, std::int64_t done,
                           std::int64_t most) {
  if (limit_s <= 0 || epoch_s <= 0 || done >= most) return most;
  const double room = std::floor((limit_s - elapsed_s) / epoch_s);
  const auto more = room > 0 ? static_cast<std::int64_t>(std::min(room, double(most))) : 0;
  return std::clamp(done + more, done, most);
}

}  // namespace tlcore::detail
