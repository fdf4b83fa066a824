// The header reader behind the decompression-bomb check, on any bytes.
#include <cstddef>
#include <cstdint>

#include "tlcore/data/decode.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto [width, height] = tlcore::image_dimensions(data, size);
  if (width < 0 || height < 0) __builtin_trap();  // sizes are never negative
  return 0;
}
