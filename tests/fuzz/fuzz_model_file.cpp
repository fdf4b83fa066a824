// A .tlc model file or a .pth state dict: torch.save's zip and legacy formats read
// by tlcore's own pickle reader (no code runs), then the model spec inside.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tlcore/error.h"
#include "tlcore/models/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = tlcore::fuzz::write_file("model.tlc", data, size);
  try {
    (void)tlcore::models::read_model_file(path);
  } catch (const tlcore::Error&) {
  }
  return 0;
}
