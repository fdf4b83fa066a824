// One serialized tf.train.Example: the image bytes and the label, or a tlcore::Error.
#include <cstddef>
#include <cstdint>

#include "../../cpp/src/data/internal/tf_example.h"
#include "tlcore/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)tlcore::internal::parse_image_example(data, size, "image", "class", "fuzz");
  } catch (const tlcore::Error&) {
  }
  return 0;
}
