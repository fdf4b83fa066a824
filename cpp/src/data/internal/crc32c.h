// CRC-32C (Castagnoli), the checksum of TFRecord framing (private to cpp/src/data).
// Debian ships no C/C++ CRC32C library (only a Python one), so a table
// implementation lives here.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tlcore::internal {

// CRC-32C of `size` bytes, continuing from `crc` (0 to start).
std::uint32_t crc32c(const std::uint8_t* data, std::size_t size, std::uint32_t crc = 0);

// TFRecord's masked form: a CRC stored beside the data it covers is rotated
// and offset so that a CRC of data holding CRCs stays well distributed.
inline std::uint32_t masked_crc32c(const std::uint8_t* data, std::size_t size) {
  const std::uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

}  // namespace tlcore::internal
