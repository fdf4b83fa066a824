// The pickle reader alone, on any bytes: the opcodes and globals of plain data
// and tensors, everything else refused. Storages come from a bounded pool.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

#include "../../cpp/src/models/torch_pickle.h"
#include "tlcore/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace d = tlcore::models::detail;
  // As a zip archive's reader does: a storage larger than its record is an error.
  const d::StorageLoader load = [](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    if (numel < 0 || numel > (1 << 16)) throw tlcore::FormatError("fuzz: storage " + key);
    return torch::zeros({numel}, torch::TensorOptions().dtype(dtype));
  };
  d::PickleInput in{reinterpret_cast<const char*>(data), size};
  try {
    (void)d::unpickle(in, load, "fuzz");
  } catch (const tlcore::Error&) {
  }
  return 0;
}
