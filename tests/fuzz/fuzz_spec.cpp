// The model spec (JSON text) a model file carries: every field checked, or a FormatError.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tlcore/error.h"
#include "tlcore/models/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)tlcore::models::spec_from_text(std::string(reinterpret_cast<const char*>(data), size),
                                         "fuzz");
  } catch (const tlcore::Error&) {
  }
  return 0;
}
