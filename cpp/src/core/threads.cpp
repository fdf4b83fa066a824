#include "tlcore/threads.h"

#include <sched.h>

#include <ATen/Parallel.h>
#include <atomic>
#include <thread>

namespace tlcore {
namespace {
std::atomic<int> g_threads{0};
}  // namespace

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

int num_threads() {
  const int n = g_threads.load();
  return n > 0 ? n : available_cores();
}

void set_num_threads(int n) {
  if (n <= 0) n = available_cores();
  g_threads.store(n);
  at::set_num_threads(n);
}

}  // namespace tlcore
