// Cached feature rows in a memory-mapped file (private to train/): what lets a
// feature cache exceed memory. The kernel pages rows in and out of the page
// cache, so the rows take disk space, not resident memory that cannot be freed.
//
// A file is written under a temporary name and renamed once complete, so a
// killed run never leaves a file that looks whole. Its header records the
// fingerprint of what computed it (model weights, data, pipeline, options): a
// file whose fingerprint differs is stale and never used.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tlcore::detail {

struct RowLayout {
  std::vector<std::int64_t> row_shape;  // one row's shape (C or C x H x W)
  torch::ScalarType dtype = torch::kFloat;
  std::int64_t capacity = 0;  // rows the file has room for
  bool flip = false;          // a second block of rows for the mirrored images
};

class RowFile {
 public:
  // A new file for `layout`, written at `path`.tmp... until commit(). Error naming
  // the path when it cannot be created (e.g. the disk is full).
  RowFile(std::string path, const RowLayout& layout);
  // The complete file at `path` if its fingerprint is `fingerprint`; nullptr
  // otherwise, with `why` saying what was wrong ("" when there is no file).
  static std::unique_ptr<RowFile> open(const std::string& path, const std::string& fingerprint,
                                       std::string* why);
  ~RowFile();
  RowFile(const RowFile&) = delete;
  RowFile& operator=(const RowFile&) = delete;

  // Views of the mapping, `capacity` rows long (committed files: the rows written).
  torch::Tensor inputs() const;
  torch::Tensor flipped() const;  // undefined without flip
  torch::Tensor labels() const;   // int64
  torch::Tensor indices() const;  // int64, the dataset index of each row

  // Records that `rows` rows are written and moves the file to its final name.
  void commit(std::int64_t rows, const std::string& fingerprint);

  const std::string& path() const { return path_; }
  std::uint64_t bytes() const { return size_; }

 private:
  RowFile() = default;
  void map(int fd, bool writable);
  std::uint64_t block_offset(int block) const;

  std::string path_, temp_;
  RowLayout layout_;
  std::int64_t rows_ = 0;
  std::uint64_t size_ = 0;
  std::uint8_t* data_ = nullptr;
};

}  // namespace tlcore::detail
