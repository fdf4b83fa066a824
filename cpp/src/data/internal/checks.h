// Argument checks and name tests shared by the data sources (private to cpp/src/data).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tlcore/data/decode.h"
#include "tlcore/error.h"

namespace tlcore::internal {

// True for names that start with '.' (hidden on Unix, macOS "._" resource forks).
inline bool is_hidden(const std::string& name) { return !name.empty() && name[0] == '.'; }

// The components of a '/'-separated member path, without empty ones and ".".
inline std::vector<std::string> split_path(const std::string& name) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start < name.size()) {
    std::size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    if (end > start && name.compare(start, end - start, ".") != 0) {
      parts.push_back(name.substr(start, end - start));
    }
    start = end + 1;
  }
  return parts;
}

// InvalidArgument unless 0 <= index < size.
inline void check_index(std::int64_t index, std::int64_t size) {
  if (index < 0 || index >= size) {
    throw InvalidArgument("index " + std::to_string(index) + " out of range for a dataset of " +
                          std::to_string(size) + " samples");
  }
}

// InvalidArgument unless the options ask for 1 or 3 channels and min_side >= 0.
inline void check_options(const DecodeOptions& options) {
  if (options.channels != 1 && options.channels != 3) {
    throw InvalidArgument("channels must be 1 or 3, got " + std::to_string(options.channels));
  }
  if (options.min_side < 0) {
    throw InvalidArgument("min_side must be >= 0, got " + std::to_string(options.min_side));
  }
}

}  // namespace tlcore::internal
