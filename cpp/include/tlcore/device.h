// Where a model runs: the one reading of the "cpu" | "cuda" | "auto" strings that
// FitOptions, PredictorOptions and the Python API take.
#pragma once

#include <string>

namespace tlcore {

// "cpu" or "cuda": "auto" is CUDA when available. InvalidArgument for any other
// string, or for "cuda" where CUDA is not available.
std::string resolve_device(const std::string& device);

}  // namespace tlcore
