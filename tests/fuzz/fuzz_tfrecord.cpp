// TFRecord framing and the tf.train.Example records inside.
// Input: 1 byte (bit 0: frame the records with correct CRCs, so the fuzzer reaches
// the Examples; bit 1: three class names), then the file's bytes, or with bit 0
// records as a 16-bit length and that many bytes each.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../cpp/src/data/internal/crc32c.h"
#include "fuzz_dataset.h"
#include "fuzz_input.h"
#include "tlcore/data/tfrecord.h"

namespace {

void append(std::vector<std::uint8_t>& out, const void* p, std::size_t n) {
  const auto* b = static_cast<const std::uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}

void append_crc(std::vector<std::uint8_t>& out, const std::uint8_t* p, std::size_t n) {
  const std::uint32_t crc = tlcore::internal::masked_crc32c(p, n);
  append(out, &crc, sizeof crc);
}

std::vector<std::uint8_t> framed(tlcore::fuzz::Input& in) {
  std::vector<std::uint8_t> file;
  while (in.size() > 0) {
    const std::uint64_t length = in.length();
    const std::uint8_t* record = in.take(length);
    std::uint8_t header[sizeof length];
    std::memcpy(header, &length, sizeof length);
    append(file, header, sizeof header);
    append_crc(file, header, sizeof header);
    append(file, record, length);
    append_crc(file, record, length);
  }
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tlcore::fuzz::Input in(data, size);
  const std::uint8_t mode = in.byte();
  std::string path;
  if (mode & 1) {
    const auto file = framed(in);
    path = tlcore::fuzz::write_file("data.tfrec", file.data(), file.size());
  } else {
    path = tlcore::fuzz::write_file("data.tfrec", in.data(), in.size());
  }
  tlcore::TfRecordOptions options;
  if (mode & 2) options.classes = {"a", "b", "c"};
  try {
    tlcore::fuzz::read_all(*tlcore::open_tfrecords(path, options));
  } catch (const tlcore::Error&) {
  }
  return 0;
}
