// Work spread over threads (private to cpp/src/data): opening a dataset of a
// thousand shards indexes them several at a time.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace tlcore::internal {

// Calls fn(i) for i in [0, n) on up to `threads` threads (<= 0: one per core).
// Rethrows the error of the lowest failing i, so the error does not depend on timing.
template <typename Fn>
void parallel_for(std::size_t n, int threads, const Fn& fn) {
  std::vector<std::exception_ptr> errors(n);
  std::atomic<std::size_t> next{0};
  const auto work = [&] {
    for (std::size_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t workers = std::min(n, threads > 0 ? static_cast<std::size_t>(threads) : cores);
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace tlcore::internal
