// The tar / tar.gz / tar.bz2 / tar.xz member walk and the class layout inside it.
#include <cstddef>
#include <cstdint>

#include "fuzz_dataset.h"
#include "fuzz_input.h"
#include "tlcore/data/sources.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // libarchive recognises the compression from the bytes, not the name.
  const auto path = tlcore::fuzz::write_file("data.tar", data, size);
  try {
    tlcore::fuzz::read_all(*tlcore::open_image_archive(path));
  } catch (const tlcore::Error&) {
  }
  return 0;
}
