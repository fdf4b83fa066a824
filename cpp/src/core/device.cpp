#include "tlcore/device.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include "tlcore/error.h"

namespace tlcore {

std::string resolve_device(const std::string& device) {
  if (device == "cpu") return "cpu";
  if (device == "cuda" || device == "auto") {
    if (torch::cuda::is_available()) return "cuda";
    if (device == "auto") return "cpu";
    throw InvalidArgument("device 'cuda' asked for, but CUDA is not available (torch " +
                          std::string(TORCH_VERSION) + " built without it, or no GPU)");
  }
  throw InvalidArgument("device must be 'cpu', 'cuda' or 'auto', got '" + device + "'");
}

}  // namespace tlcore
