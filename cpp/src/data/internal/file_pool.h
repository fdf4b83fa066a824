// Positioned reads from many files through a bounded number of open
// descriptors (private to cpp/src/data). A dataset of a thousand shards opens
// a file when a sample in it is first read and closes the least recently used
// one beyond the limit, so it never runs into the process's descriptor limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "file_io.h"

namespace tlcore::internal {

class FilePool {
 public:
  // max_open <= 0: a quarter of the process's descriptor limit, at most 256.
  explicit FilePool(std::vector<std::string> paths, int max_open = 0);

  std::size_t size() const { return paths_.size(); }
  const std::string& path(std::size_t file) const { return paths_[file]; }

  // Reads `n` bytes at `offset` of file `file` into `out`: the count read, short
  // only at the end of the file. NotFound when the file has gone (naming it),
  // Error for any other failure. Safe to call from several threads at once.
  std::size_t read(std::size_t file, std::uint64_t offset, std::uint8_t* out, std::size_t n) const;

  // Descriptors open now, for tests and benchmarks.
  std::size_t open_count() const;

 private:
  std::shared_ptr<const Fd> acquire(std::size_t file) const;

  std::vector<std::string> paths_;
  std::size_t max_open_;
  mutable std::mutex mutex_;
  mutable std::list<std::size_t> recent_;  // most recently used first
  struct Open {
    std::shared_ptr<const Fd> fd;  // a reader holds it open even once evicted
    std::list<std::size_t>::iterator place;
  };
  mutable std::unordered_map<std::size_t, Open> open_;
};

// How many files a reader keeps open: `max_open`, or for max_open <= 0 a
// quarter of the process's descriptor limit, at most 256.
std::size_t max_open_files(int max_open);

// Opens `path` read-only, refusing anything but a regular file (a FIFO or a
// device could block forever). NotFound / InvalidArgument / Error naming it.
Fd open_regular_file(const std::string& path);

// Reads `n` bytes at `offset` of `fd` (the file `path`), retrying short reads:
// the count read, short only at the end of the file.
std::size_t pread_fully(int fd, const std::string& path, std::uint64_t offset, std::uint8_t* out,
                        std::size_t n);

}  // namespace tlcore::internal
