// Reading one tf.train.Example (private to cpp/src/data).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tlcore::internal {

struct ImageExample {
  std::string image;  // the encoded image bytes
  std::int64_t label = 0;
};

// The image and label features of the serialized Example in `data`.
// FormatError starting with `where` for bytes that are not an Example, a
// missing feature, a feature of another type or not holding exactly one value.
// Unsupported when tlcore was built without protobuf.
ImageExample parse_image_example(const std::uint8_t* data, std::size_t size,
                                 const std::string& image_key, const std::string& label_key,
                                 const std::string& where);

// Unsupported when tlcore was built without protobuf, so a source fails before
// it reads anything.
void require_example_support();

}  // namespace tlcore::internal
