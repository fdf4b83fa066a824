#include "tlcore/data/split.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "tlcore/error.h"

namespace tlcore {
namespace {

// SplitMix64 and an unbiased bounded draw: fully specified, unlike
// std::shuffle and std::uniform_int_distribution, so a split is the same on
// every platform and standard library.
class SplitRng {
 public:
  SplitRng(std::uint64_t seed, std::uint64_t stream) : state_(seed ^ (stream * kGamma + kGamma)) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += kGamma);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n), n > 0: draws below 2^64 mod n would favour small results.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t threshold = (0 - n) % n;
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  static constexpr std::uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
  std::uint64_t state_;
};

// Indices of each label, in index order. Negative labels are rejected.
std::map<std::int64_t, std::vector<std::int64_t>> by_class(
    const std::vector<std::int64_t>& labels) {
  std::map<std::int64_t, std::vector<std::int64_t>> classes;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0) {
      throw InvalidArgument("label " + std::to_string(labels[i]) + " at index " +
                            std::to_string(i) + " is negative");
    }
    classes[labels[i]].push_back(static_cast<std::int64_t>(i));
  }
  return classes;
}

// Moves a uniformly drawn `count` of `items` to its front (partial Fisher-Yates).
// Each class draws from its own stream, so one class's split does not depend
// on the sizes of the others.
void choose_front(std::vector<std::int64_t>& items, std::size_t count, std::uint64_t seed,
                  std::uint64_t stream) {
  SplitRng rng(seed, stream);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t j = i + static_cast<std::size_t>(rng.below(items.size() - i));
    std::swap(items[i], items[j]);
  }
}

}  // namespace

Split stratified_split(const std::vector<std::int64_t>& labels, double val_fraction,
                       std::uint64_t seed) {
  if (!(val_fraction >= 0.0 && val_fraction <= 1.0)) {
    throw InvalidArgument("val_fraction must be in [0, 1], got " + std::to_string(val_fraction));
  }
  Split split;
  for (auto& [label, items] : by_class(labels)) {
    const std::size_t n = items.size();
    auto count = static_cast<std::size_t>(std::llround(static_cast<double>(n) * val_fraction));
    // Every class is seen in validation, and (below a fraction of 1) in training too.
    if (n >= 2 && val_fraction > 0.0) {
      count = std::max<std::size_t>(count, 1);
      if (val_fraction < 1.0) count = std::min(count, n - 1);
    }
    choose_front(items, count, seed, static_cast<std::uint64_t>(label));
    split.val.insert(split.val.end(), items.begin(),
                     items.begin() + static_cast<std::ptrdiff_t>(count));
    split.train.insert(split.train.end(), items.begin() + static_cast<std::ptrdiff_t>(count),
                       items.end());
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.val.begin(), split.val.end());
  return split;
}

std::vector<std::int64_t> per_class_subset(const std::vector<std::int64_t>& labels,
                                           std::int64_t per_class, std::uint64_t seed) {
  if (per_class < 0) {
    throw InvalidArgument("per_class must be >= 0, got " + std::to_string(per_class));
  }
  std::vector<std::int64_t> out;
  for (auto& [label, items] : by_class(labels)) {
    const std::size_t count = std::min(items.size(), static_cast<std::size_t>(per_class));
    choose_front(items, count, seed, static_cast<std::uint64_t>(label));
    out.insert(out.end(), items.begin(), items.begin() + static_cast<std::ptrdiff_t>(count));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace tlcore
