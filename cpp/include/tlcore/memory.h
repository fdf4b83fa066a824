// How the process allocates memory for tensors.
#pragma once

#include <cstdint>
#include <string>

namespace tlcore {

// Asks glibc's malloc to keep freed blocks of up to 32 MiB in its heap instead of
// giving them back to the system: a training step or an inference batch frees and
// reallocates the same activations every time, and each fresh page costs a page
// fault (a cached-tail fine-tuning epoch at 224 px ran 5x faster with this, its
// system time had been 60% of the CPU). Blocks above 32 MiB are still mapped
// afresh. Resident memory stays at its peak instead of shrinking after it.
// Called by the trainer, predict(), the Predictor and InferenceModel; runs once; leaves malloc
// alone when the user tuned it (MALLOC_*_ or GLIBC_TUNABLES in the environment)
// and on other C libraries.
void keep_freed_memory();

// Bytes from "4GB", "512MB", "1.5GiB", "100000" (decimal units are powers of
// 1000, binary ones of 1024); -1 for "". InvalidArgument naming `option` otherwise.
std::int64_t parse_byte_size(const std::string& text, const std::string& option);

}  // namespace tlcore
