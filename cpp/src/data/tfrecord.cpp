// TFRecord shards: records of uint64 length, uint32 masked CRC32C of the
// length, the data, uint32 masked CRC32C of the data (all little-endian). The
// open scan reads every record once, for its CRCs and label; image() reads
// its record again with pread, so worker threads share one descriptor per shard.
#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "internal/checks.h"
#include "internal/crc32c.h"
#include "internal/file_io.h"
#include "internal/tf_example.h"
#include "tlcore/data/decode.h"
#include "tlcore/data/tfrecord.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

namespace fs = std::filesystem;
using internal::Fd;

constexpr std::uint64_t kHeaderBytes = 12;  // length, CRC of length
constexpr std::uint64_t kFooterBytes = 4;   // CRC of data
// Without class names the classes are "0".."max label": a label this large is
// far more likely garbage than a class index.
constexpr std::int64_t kMaxUnnamedClasses = 1 << 20;

std::uint64_t load_le64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

std::uint32_t load_le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

[[noreturn]] void throw_errno(const std::string& path, int err, const char* what) {
  if (err == ENOENT || err == ENOTDIR) throw NotFound(path + ": no such file");
  throw Error(path + ": cannot " + what + ": " +
              std::error_code(err, std::generic_category()).message());
}

// A shard opened for reading, closed with the dataset.
class Shard {
 public:
  explicit Shard(std::string path)
      : path_(std::move(path)), fd_(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_.get() < 0) throw_errno(path_, errno, "open");
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw_errno(path_, errno, "stat");
    // Only regular files: reading a FIFO or a device could block forever.
    if (!S_ISREG(st.st_mode)) throw InvalidArgument(path_ + ": not a regular file");
    size_ = static_cast<std::uint64_t>(st.st_size);
  }

  const std::string& path() const { return path_; }
  std::uint64_t size() const { return size_; }

  // Reads `n` bytes at `offset` into `out`; the count read, short only at the end of the file.
  std::size_t read(std::uint64_t offset, std::uint8_t* out, std::size_t n) const {
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd_.get(), out + got, n - got, static_cast<off_t>(offset + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno(path_, errno, "read");
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }

 private:
  std::string path_;
  Fd fd_;
  std::uint64_t size_ = 0;
};

struct Record {
  std::uint32_t shard;
  std::int64_t number;   // within its shard
  std::uint64_t offset;  // of the record header in the shard
  std::uint64_t length;  // data bytes
  std::int64_t label;
};

std::string where(const Shard& shard, std::int64_t number, std::uint64_t offset) {
  return shard.path() + ": record " + std::to_string(number) + " at byte offset " +
         std::to_string(offset);
}

// Reads a record's data and checks its CRC; `buffer` holds data then CRC.
void read_data(const Shard& shard, const Record& r, std::vector<std::uint8_t>& buffer) {
  const std::size_t n = static_cast<std::size_t>(r.length + kFooterBytes);
  buffer.resize(n);
  if (shard.read(r.offset + kHeaderBytes, buffer.data(), n) != n) {
    throw FormatError(where(shard, r.number, r.offset) + ": truncated record (" +
                      std::to_string(r.length) + " data bytes expected)");
  }
  const std::size_t length = static_cast<std::size_t>(r.length);
  if (internal::masked_crc32c(buffer.data(), length) != load_le32(buffer.data() + length)) {
    throw FormatError(where(shard, r.number, r.offset) + ": data CRC mismatch (corrupt record)");
  }
}

class TfRecords final : public Dataset {
 public:
  TfRecords(std::vector<std::unique_ptr<Shard>> shards, std::vector<Record> records,
            TfRecordOptions options)
      : shards_(std::move(shards)), records_(std::move(records)), options_(std::move(options)) {}

  std::int64_t size() const override { return static_cast<std::int64_t>(records_.size()); }

  std::int64_t label(std::int64_t index) const override { return record(index).label; }

  const std::vector<std::string>& classes() const override { return options_.classes; }

  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override {
    internal::check_options(options);
    const Record& r = record(index);
    const Shard& shard = *shards_[r.shard];
    std::vector<std::uint8_t> buffer;
    read_data(shard, r, buffer);
    const internal::ImageExample example = internal::parse_image_example(
        buffer.data(), static_cast<std::size_t>(r.length), options_.image_key, options_.label_key,
        where(shard, r.number, r.offset));
    return decode_image(reinterpret_cast<const std::uint8_t*>(example.image.data()),
                        example.image.size(), options, source(index));
  }

  std::string source(std::int64_t index) const override {
    const Record& r = record(index);
    return shards_[r.shard]->path() + "#" + std::to_string(r.number);
  }

 private:
  const Record& record(std::int64_t index) const {
    internal::check_index(index, size());
    return records_[static_cast<std::size_t>(index)];
  }

  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<Record> records_;
  TfRecordOptions options_;
};

bool has_glob_characters(const std::string& pattern) {
  return pattern.find_first_of("*?[") != std::string::npos;
}

bool is_tfrecord_name(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* ext : {".tfrec", ".tfrecord", ".tfrecords"}) {
    const std::string e = ext;
    if (lower.size() > e.size() && lower.compare(lower.size() - e.size(), e.size(), e) == 0) {
      return true;
    }
  }
  return false;
}

struct GlobFree {
  void operator()(glob_t* g) const { globfree(g); }
};

// The shard paths, sorted byte-wise (glob(3) sorts by locale collation).
std::vector<std::string> shard_paths(const std::string& pattern) {
  std::vector<std::string> paths;
  std::error_code ec;
  if (!has_glob_characters(pattern)) {
    const fs::file_status status = fs::status(pattern, ec);
    if (!fs::exists(status)) throw NotFound(pattern + ": no such file or folder");
    if (!fs::is_directory(status)) return {pattern};
    for (const fs::directory_entry& entry : fs::directory_iterator(pattern, ec)) {
      const std::string name = entry.path().filename().string();
      if (!internal::is_hidden(name) && is_tfrecord_name(name) && entry.is_regular_file(ec)) {
        paths.push_back(entry.path().string());
      }
    }
    if (ec) throw Error(pattern + ": cannot list folder: " + ec.message());
    if (paths.empty()) {
      throw NotFound(pattern + ": no .tfrec, .tfrecord or .tfrecords files in the folder");
    }
  } else {
    glob_t g{};
    const int r = ::glob(pattern.c_str(), 0, nullptr, &g);
    const std::unique_ptr<glob_t, GlobFree> owner(&g);
    if (r == GLOB_NOSPACE) throw Error(pattern + ": out of memory expanding the pattern");
    if (r == GLOB_ABORTED) throw Error(pattern + ": cannot read a folder the pattern names");
    for (std::size_t i = 0; r == 0 && i < g.gl_pathc; ++i) {
      if (fs::is_regular_file(g.gl_pathv[i], ec)) paths.emplace_back(g.gl_pathv[i]);
    }
    if (paths.empty()) throw NotFound(pattern + ": no files match");
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

// Appends the records of `shard` (number `s`) to `records`, checking each one.
void scan_shard(const Shard& shard, std::uint32_t s, const TfRecordOptions& options,
                std::vector<Record>& records) {
  std::vector<std::uint8_t> buffer;
  std::uint8_t header[kHeaderBytes];
  std::uint64_t offset = 0;
  for (std::int64_t number = 0; offset < shard.size(); ++number) {
    const std::uint64_t left = shard.size() - offset;
    if (left < kHeaderBytes) {
      throw FormatError(where(shard, number, offset) + ": truncated record header (" +
                        std::to_string(left) + " of 12 bytes)");
    }
    if (shard.read(offset, header, kHeaderBytes) != kHeaderBytes) {
      throw FormatError(where(shard, number, offset) + ": truncated record header");
    }
    if (internal::masked_crc32c(header, 8) != load_le32(header + 8)) {
      const bool gzip = offset == 0 && header[0] == 0x1f && header[1] == 0x8b;
      throw FormatError(where(shard, number, offset) + ": length CRC mismatch (" +
                        (gzip ? "a gzip-compressed TFRecord file: decompress it first"
                              : "corrupt record, or not a TFRecord file") +
                        ")");
    }
    const std::uint64_t length = load_le64(header);
    if (length > left - kHeaderBytes || left - kHeaderBytes - length < kFooterBytes) {
      throw FormatError(where(shard, number, offset) + ": truncated record (" +
                        std::to_string(length) + " data bytes and a 4-byte CRC expected, " +
                        std::to_string(left - kHeaderBytes) + " bytes left in the file)");
    }
    const Record record{s, number, offset, length, 0};
    read_data(shard, record, buffer);
    const internal::ImageExample example = internal::parse_image_example(
        buffer.data(), static_cast<std::size_t>(length), options.image_key, options.label_key,
        where(shard, number, offset));
    const auto classes = static_cast<std::int64_t>(options.classes.size());
    const std::int64_t limit = classes > 0 ? classes : kMaxUnnamedClasses;
    if (example.label < 0 || example.label >= limit) {
      throw FormatError(where(shard, number, offset) + ": label " + std::to_string(example.label) +
                        " out of range (" +
                        (classes > 0
                             ? std::to_string(classes) + " class names given"
                             : "0 to " + std::to_string(limit - 1) + " without class names") +
                        ")");
    }
    records.push_back({s, number, offset, length, example.label});
    offset += kHeaderBytes + length + kFooterBytes;
  }
}

}  // namespace

std::shared_ptr<Dataset> open_tfrecords(const std::string& pattern,
                                        const TfRecordOptions& options) {
  internal::require_example_support();
  if (options.image_key.empty() || options.label_key.empty()) {
    throw InvalidArgument("open_tfrecords: image_key and label_key must not be empty");
  }
  std::vector<std::unique_ptr<Shard>> shards;
  std::vector<Record> records;
  for (const std::string& path : shard_paths(pattern)) {
    shards.push_back(std::make_unique<Shard>(path));
    scan_shard(*shards.back(), static_cast<std::uint32_t>(shards.size() - 1), options, records);
  }
  if (records.empty()) throw FormatError(pattern + ": the TFRecord files hold no records");

  TfRecordOptions kept = options;
  if (kept.classes.empty()) {
    std::int64_t max_label = 0;
    for (const Record& r : records) max_label = std::max(max_label, r.label);
    for (std::int64_t k = 0; k <= max_label; ++k) kept.classes.push_back(std::to_string(k));
  }
  return std::make_shared<TfRecords>(std::move(shards), std::move(records), std::move(kept));
}

}  // namespace tlcore
