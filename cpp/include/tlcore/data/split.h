// Reproducible splits of a labelled dataset.
#pragma once

#include <cstdint>
#include <vector>

namespace tlcore {

struct Split {
  std::vector<std::int64_t> train;
  std::vector<std::int64_t> val;
};

// Stratified split: each class contributes round(n_class * val_fraction)
// samples to val (at least one when the class has two or more and val_fraction > 0).
// The same (labels, fraction, seed) always gives the same split; both lists are sorted.
Split stratified_split(const std::vector<std::int64_t>& labels, double val_fraction,
                       std::uint64_t seed);

// At most `per_class` indices of each class, drawn with `seed`, sorted.
std::vector<std::int64_t> per_class_subset(const std::vector<std::int64_t>& labels,
                                           std::int64_t per_class, std::uint64_t seed);

}  // namespace tlcore
