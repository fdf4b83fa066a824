// A tar archive read front to back through libarchive, in any compression it
// reads (private to cpp/src/data). Compressed shards and in-memory archives
// both list and read their members through it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tar_index.h"

namespace tlcore::internal {

// The compression `path`'s first bytes announce ("gzip", "bzip2", "xz",
// "zstd"), or "" for none.
std::string compression_of(const std::string& path);

class ArchiveStream {
 public:
  // Throws NotFound for a missing file, FormatError for one libarchive cannot
  // open, Unsupported when tlcore was built without libarchive.
  explicit ArchiveStream(const std::string& path, std::size_t block_size = 1 << 20);
  ~ArchiveStream();
  ArchiveStream(const ArchiveStream&) = delete;
  ArchiveStream& operator=(const ArchiveStream&) = delete;

  // Moves to the next member, skipping the current one's unread data; false at
  // the end. `member->data` is its ordinal: how many members came before it.
  // Throws FormatError naming the archive for damage or a truncated stream.
  bool next(TarMember* member);

  // Appends the current member's data to `out` (zeros for sparse holes).
  // Throws FormatError naming archive and member if it is damaged, truncated
  // or over `limit` bytes.
  void read(std::vector<std::uint8_t>& out, std::uint64_t limit);

  bool compressed() const;  // after the first next()
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tlcore::internal
