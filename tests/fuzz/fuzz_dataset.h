// Reads every sample of a dataset a harness opened, as a loader would.
#pragma once

#include <cstdint>

#include "tlcore/data/dataset.h"
#include "tlcore/error.h"

namespace tlcore::fuzz {

inline void read_all(const Dataset& dataset) {
  DecodeOptions options;
  options.max_pixels = 1 << 22;
  const auto classes = static_cast<std::int64_t>(dataset.classes().size());
  for (std::int64_t i = 0; i < dataset.size() && i < 64; ++i) {
    const std::int64_t label = dataset.label(i);
    if (label < 0 || label >= classes) __builtin_trap();  // a label outside the classes
    (void)dataset.source(i);
    try {
      (void)dataset.image(i, options);
    } catch (const tlcore::Error&) {  // one bad sample is an error, not the end of the harness
    }
  }
}

}  // namespace tlcore::fuzz
