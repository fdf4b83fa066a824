#include "tlcore/augment/rng.h"

#include <cmath>
#include <string>

#include "tlcore/error.h"

namespace tlcore {

std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Each stage is a bijection, so for a fixed (seed, epoch) distinct indices always
// get distinct engine seeds; mixing between stages keeps neighbouring triples apart.
Rng::Rng(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index)
    : engine_(mix64(mix64(mix64(seed) ^ epoch) ^ index)) {}

// The standard distributions differ between standard libraries; these are
// written out so a seed gives the same draws with any compiler.
double Rng::uniform(double lo, double hi) {
  const double unit = static_cast<double>(engine_() >> 11) * 0x1.0p-53;  // [0, 1)
  const double value = lo + (hi - lo) * unit;
  // lo + (hi - lo) * unit can round up to hi; keep the interval half-open.
  return value < hi ? value : lo;
}

std::int64_t Rng::integer(std::int64_t lo, std::int64_t hi) {
  if (hi < lo) {
    throw InvalidArgument("Rng::integer: empty range [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]");
  }
  const std::uint64_t span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
  if (span == ~0ULL) return static_cast<std::int64_t>(engine_());
  const std::uint64_t n = span + 1;
  // Rejection keeps every value equally likely: drop the top partial block of 2^64.
  const std::uint64_t limit = ~0ULL - (~0ULL % n + 1) % n;
  std::uint64_t x = engine_();
  while (x > limit) x = engine_();
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + x % n);
}

bool Rng::bernoulli(double p) { return uniform(0.0, 1.0) < p; }

}  // namespace tlcore
