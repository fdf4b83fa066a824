// Per-sample random streams. Every augmentation draws from an Rng seeded by
// (seed, epoch, index), so an epoch replays exactly whatever the thread count
// or the order in which workers pick samples.
#pragma once

#include <cstdint>
#include <random>

namespace tlcore {

class Rng {
 public:
  Rng(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index);
  explicit Rng(std::uint64_t seed) : Rng(seed, 0, 0) {}

  // Uniform in [lo, hi).
  double uniform(double lo, double hi);
  // Uniform integer in [lo, hi] (both inclusive).
  std::int64_t integer(std::int64_t lo, std::int64_t hi);
  // True with probability p.
  bool bernoulli(double p);

  std::mt19937_64& engine() { return engine_; }

 private:
  std::mt19937_64 engine_;
};

// SplitMix64 finaliser: a well-mixed 64-bit hash used to derive seeds.
std::uint64_t mix64(std::uint64_t x);

}  // namespace tlcore
