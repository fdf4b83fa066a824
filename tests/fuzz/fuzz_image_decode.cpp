// JPEG, PNG, BMP and WEBP decoding: any bytes give an image or a tlcore::Error.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tlcore/data/decode.h"
#include "tlcore/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The last byte picks the options, so every format's bytes stay where its magic is.
  const std::uint8_t choice = data[size - 1];
  tlcore::DecodeOptions options;
  options.channels = choice & 1 ? 1 : 3;
  options.min_side = choice & 2 ? 16 : 0;  // JPEG's scaled decoding
  options.max_pixels = 1 << 22;            // the bomb check, at a size the fuzzer can afford
  try {
    const cv::Mat image = tlcore::decode_image(data, size, options, "fuzz");
    if (image.empty() || image.channels() != options.channels || image.depth() != CV_8U)
      __builtin_trap();  // the contract: a real 8-bit image or an error
    if (std::int64_t(image.total()) > options.max_pixels) __builtin_trap();
  } catch (const tlcore::Error&) {
  }
  return 0;
}
