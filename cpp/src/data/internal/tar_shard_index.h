// What one tar shard holds, as learnt by scanning it once and kept in its
// index file (private to cpp/src/data).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "index_cache.h"

namespace tlcore::internal {

enum class ShardLayout : std::uint8_t { kEmpty = 0, kClassFolders = 1, kKeyed = 2 };

struct ShardSample {
  std::string name;        // the image member's path in the shard
  std::uint64_t data = 0;  // offset of its bytes; in a streamed shard, its member ordinal
  std::uint64_t size = 0;
  std::uint32_t label = 0;  // into TarShardIndex::labels
};

struct TarShardIndex {
  ShardLayout layout = ShardLayout::kEmpty;
  bool streamed = false;  // compressed: read front to back, not in place
  // Class folders: each image's folder path; keyed: each label's text.
  std::vector<std::string> labels;
  std::vector<ShardSample> samples;
  std::int64_t non_image = 0;
  // Samples that cannot be used, "shard:member: why", and how many (the list is capped).
  std::vector<std::string> problems;
  std::int64_t problem_count = 0;
};

// Scans the tar shard at `path`: a plain tar by its headers in place, a
// compressed one (gzip, bzip2, xz, zstd) front to back. Problems with single
// samples and a damaged tail are recorded, not thrown: skip_corrupt is the
// opener's choice. Throws NotFound, or Unsupported for a compressed shard
// when tlcore was built without libarchive.
TarShardIndex scan_tar_shard(const std::string& path);

std::vector<std::uint8_t> encode(const TarShardIndex& index);
// Throws FormatError for a payload that does not decode.
TarShardIndex decode_tar_shard_index(const std::vector<std::uint8_t>& payload);

// The shard's index: read from SHARD.tlcidx or the cache when valid, else
// scanned and saved to the cache (or beside the shard: `beside`). `scanned` is
// set when it had to be scanned.
TarShardIndex tar_shard_index(const std::string& path, const std::string& index_dir, bool beside,
                              bool* scanned);

}  // namespace tlcore::internal
