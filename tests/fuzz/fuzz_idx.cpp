// MNIST-style IDX images and labels, plain or gzipped (the gzip reader included).
// Input: a 16-bit length and that many bytes of the labels file, then the images file.
#include <cstddef>
#include <cstdint>

#include "fuzz_dataset.h"
#include "fuzz_input.h"
#include "tlcore/data/sources.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tlcore::fuzz::Input in(data, size);
  const std::size_t labels_size = in.length();
  const auto labels = tlcore::fuzz::write_file("labels.idx", in.take(labels_size), labels_size);
  const auto images = tlcore::fuzz::write_file("images.idx", in.data(), in.size());
  try {
    tlcore::fuzz::read_all(*tlcore::open_idx(images, labels));
  } catch (const tlcore::Error&) {
  }
  return 0;
}
