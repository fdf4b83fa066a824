#include "tlcore/memory.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <thread>

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

}  // namespace tlcore
