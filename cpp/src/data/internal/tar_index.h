// The members of an uncompressed tar file, found by reading its headers in
// place (private to cpp/src/data). Reads ustar, GNU (long names, base-256
// sizes) and pax (path and size records) headers; data is never read, so
// listing a 1 GB shard touches only its headers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tlcore::internal {

// Reads up to n bytes at offset into out; returns the count (short at the end of the file).
using ReadAt = std::function<std::size_t(std::uint64_t offset, std::uint8_t* out, std::size_t n)>;

struct TarMember {
  std::string name;          // path inside the archive, pax and GNU long names applied
  std::uint64_t header = 0;  // offset of its first header block (a pax or long-name block)
  std::uint64_t data = 0;    // offset of its data
  std::uint64_t size = 0;    // data bytes
  bool regular = false;      // a regular file (folders, links and devices are not)
  bool directory = false;
};

// One member: the entry whose first header block is at `offset`.
// `next` receives the offset of the following entry, or `file_size` at the end
// of the archive (a zero block or the end of the file). Throws FormatError
// naming `path` and the offset for a bad checksum, a malformed field, or data
// running past the end of the file.
TarMember read_tar_member(const ReadAt& read, std::uint64_t offset, std::uint64_t file_size,
                          const std::string& path, std::uint64_t* next);

// True when the entry at `offset` is the end of the archive (no more members).
bool at_tar_end(const ReadAt& read, std::uint64_t offset, std::uint64_t file_size);

}  // namespace tlcore::internal
