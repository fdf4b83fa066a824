// Cached indexes of shard files (private to cpp/src/data): what a first open
// learns by scanning a shard (member offsets, labels) is saved once, so that
// opening the dataset again costs a read of the index instead of a scan.
//
// An index is valid for one shard file as it was (size and modification time)
// and one reading of it (`key`: e.g. the TFRecord feature names). A stale,
// damaged or foreign index is never trusted: the shard is scanned again and the
// index rewritten. Indexes are untrusted input like the shards: every offset
// read from one is checked against the shard's size before use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tlcore::internal {

// What tells one version of a file from another without reading it. Timestamps
// are as coarse as the kernel's clock tick, so a same-size rewrite within one
// tick goes unseen: reads still check their member (CRC, image decoder).
struct FileStamp {
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::uint64_t inode = 0;
};

// The shard's size, times and inode. NotFound when it does not exist.
FileStamp file_stamp(const std::string& path);

// tlcore's cache folder: $TLCORE_CACHE_DIR, else $XDG_CACHE_HOME/tlcore, else
// ~/.cache/tlcore (the temporary folder's tlcore-cache without a home).
std::string cache_root();

// The index file of `shard` for a reader of kind `kind` (e.g. "tar"): under
// `index_dir`, or when that is empty under $TLCORE_CACHE_DIR, $XDG_CACHE_HOME/tlcore
// or ~/.cache/tlcore, in "index/", named after the shard's absolute path.
std::string index_path(const std::string& shard, const std::string& index_dir,
                       const std::string& kind);

// The payload saved for `stamp` and `key` at `path`; nullopt when there is no
// index or it is stale, damaged or for another key.
std::optional<std::vector<std::uint8_t>> load_index(const std::string& path, const FileStamp& stamp,
                                                    const std::string& key);

// Saves `payload` at `path` (a temporary file, then a rename; folders made as
// needed, the umask's permissions). False when it cannot be written (e.g. a
// read-only cache): the dataset then works without a cached index.
bool save_index(const std::string& path, const FileStamp& stamp, const std::string& key,
                const std::vector<std::uint8_t>& payload);

// Little-endian fields of an index payload.
class IndexWriter {
 public:
  void u8(std::uint8_t v) { bytes_.push_back(v); }
  void u64(std::uint64_t v);
  void text(const std::string& s);
  std::vector<std::uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
};

// Reads what IndexWriter wrote; throws FormatError past the end.
class IndexReader {
 public:
  explicit IndexReader(const std::vector<std::uint8_t>& bytes) : bytes_(bytes) {}
  std::uint8_t u8();
  std::uint64_t u64();
  std::string text();
  bool done() const { return pos_ == bytes_.size(); }

 private:
  void need(std::size_t n) const;

  const std::vector<std::uint8_t>& bytes_;
  std::size_t pos_ = 0;
};

}  // namespace tlcore::internal
