#include "tlcore/memory.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <utility>

#include "tlcore/error.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace tlcore {
namespace {

#if defined(__GLIBC__)
bool user_tuned_malloc() {
  for (const char* name : {"GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                           "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

void tune_glibc_malloc() {
  if (user_tuned_malloc()) return;
  constexpr int kMiB = 1 << 20;
  // The largest threshold glibc accepts on 64-bit systems; setting it also stops
  // glibc from adjusting it (and the trim threshold) on its own.
  mallopt(M_MMAP_THRESHOLD, 32 * kMiB);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // never shrink the heap below 1 GiB of free top
  mallopt(M_TOP_PAD, 64 * kMiB);       // grow it in large steps
  // Each arena keeps what it freed: glibc's default of 8 per core let a service's threads
  // spread large decodes over 16 arenas and grow by 450 MB under hostile traffic. One per
  // core keeps the threads of a busy core apart and bounds what is kept.
  mallopt(M_ARENA_MAX, static_cast<int>(std::max(2u, std::thread::hardware_concurrency())));
}
#endif

}  // namespace

void keep_freed_memory() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, tune_glibc_malloc);
#endif
}

std::int64_t parse_byte_size(const std::string& text, const std::string& option) {
  if (text.empty()) return -1;
  std::size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  std::string unit = text.substr(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::pair<const char*, double> units[] = {{"", 1},
                                                  {"B", 1},
                                                  {"KB", 1e3},
                                                  {"MB", 1e6},
                                                  {"GB", 1e9},
                                                  {"TB", 1e12},
                                                  {"KIB", 1024.0},
                                                  {"MIB", 1048576.0},
                                                  {"GIB", 1073741824.0},
                                                  {"TIB", 1099511627776.0}};
  for (const auto& [name, scale] : units) {
    if (end > 0 && unit == name && value >= 0 && std::isfinite(value * scale) &&
        value * scale < 9e18) {
      return static_cast<std::int64_t>(value * scale);
    }
  }
  throw InvalidArgument(option + ": expected a size such as \"4GB\" or \"512MiB\", got \"" + text +
                        "\"");
}

}  // namespace tlcore
