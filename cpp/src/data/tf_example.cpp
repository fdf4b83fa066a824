#include "internal/tf_example.h"

#include <algorithm>
#include <climits>
#include <utility>
#include <vector>

#include "tlcore/error.h"

#ifdef TLCORE_HAVE_PROTOBUF
#include "example.pb.h"
#endif

namespace tlcore::internal {

#ifdef TLCORE_HAVE_PROTOBUF

namespace {

const char* kind_name(tensorflow::Feature::KindCase kind) {
  switch (kind) {
    case tensorflow::Feature::kBytesList:
      return "bytes_list";
    case tensorflow::Feature::kFloatList:
      return "float_list";
    case tensorflow::Feature::kInt64List:
      return "int64_list";
    case tensorflow::Feature::KIND_NOT_SET:
      break;
  }
  return "empty feature";
}

const tensorflow::Feature& feature(const tensorflow::Example& example, const std::string& key,
                                   tensorflow::Feature::KindCase kind, const std::string& where) {
  const auto& features = example.features().feature();
  const auto it = features.find(key);
  if (it == features.end()) {
    std::vector<std::string> keys;
    for (const auto& entry : features) keys.push_back("'" + entry.first + "'");
    std::sort(keys.begin(), keys.end());
    std::string present;
    for (const std::string& k : keys) present += (present.empty() ? "" : ", ") + k;
    throw FormatError(where + ": no feature '" + key +
                      "' (features: " + (present.empty() ? "none" : present) + ")");
  }
  if (it->second.kind_case() != kind) {
    throw FormatError(where + ": feature '" + key + "' is a " + kind_name(it->second.kind_case()) +
                      ", expected a " + kind_name(kind));
  }
  return it->second;
}

void check_one_value(int count, const std::string& key, const std::string& where) {
  if (count != 1) {
    throw FormatError(where + ": feature '" + key + "' holds " + std::to_string(count) +
                      " values, expected 1");
  }
}

}  // namespace

void require_example_support() {}

ImageExample parse_image_example(const std::uint8_t* data, std::size_t size,
                                 const std::string& image_key, const std::string& label_key,
                                 const std::string& where) {
  tensorflow::Example example;
  if (size > static_cast<std::size_t>(INT_MAX) ||
      !example.ParseFromArray(data, static_cast<int>(size))) {
    throw FormatError(where + ": record is not a tf.train.Example protobuf");
  }
  const auto& image = feature(example, image_key, tensorflow::Feature::kBytesList, where);
  check_one_value(image.bytes_list().value_size(), image_key, where);
  const auto& label = feature(example, label_key, tensorflow::Feature::kInt64List, where);
  check_one_value(label.int64_list().value_size(), label_key, where);

  ImageExample out;
  out.label = label.int64_list().value(0);
  // The message dies here: take its bytes rather than copy them.
  out.image = std::move(*example.mutable_features()
                             ->mutable_feature()
                             ->at(image_key)
                             .mutable_bytes_list()
                             ->mutable_value(0));
  return out;
}

#else

void require_example_support() {
  throw Unsupported(
      "tlcore built without protobuf: TFRecords cannot be read (on Debian: apt-get install "
      "libprotobuf-dev protobuf-compiler, then rebuild)");
}

ImageExample parse_image_example(const std::uint8_t*, std::size_t, const std::string&,
                                 const std::string&, const std::string&) {
  require_example_support();
  return {};
}

#endif

}  // namespace tlcore::internal
