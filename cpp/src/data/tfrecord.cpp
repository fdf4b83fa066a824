// TFRecord shards: records of uint64 length, uint32 masked CRC32C of the
// length, the data, uint32 masked CRC32C of the data (all little-endian). The
// first open scans every record once, on several threads, for its CRCs and
// label, and caches each shard's record index (like DALI's tfrecord2idx);
// image() reads its record again with a positioned read through a bounded
// pool of open files, so worker threads share descriptors.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "internal/checks.h"
#include "internal/crc32c.h"
#include "internal/file_pool.h"
#include "internal/index_cache.h"
#include "internal/parallel.h"
#include "internal/shard_paths.h"
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

// A shard being scanned: one descriptor of its own, outside the dataset's pool.
class Shard {
 public:
  explicit Shard(std::string path)
      : path_(std::move(path)),
        fd_(internal::open_regular_file(path_)),
        size_(internal::file_stamp(path_).size) {}

  const std::string& path() const { return path_; }
  std::uint64_t size() const { return size_; }
  std::size_t read(std::uint64_t offset, std::uint8_t* out, std::size_t n) const {
    return internal::pread_fully(fd_.get(), path_, offset, out, n);
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

std::string where(const std::string& path, std::int64_t number, std::uint64_t offset) {
  return path + ": record " + std::to_string(number) + " at byte offset " + std::to_string(offset);
}

// Checks a record's data read into `buffer` (data then CRC; `got` bytes of it read).
void check_data(const std::string& path, const Record& r, const std::vector<std::uint8_t>& buffer,
                std::size_t got) {
  if (got != buffer.size()) {
    throw FormatError(where(path, r.number, r.offset) + ": truncated record (" +
                      std::to_string(r.length) + " data bytes expected)");
  }
  const std::size_t length = static_cast<std::size_t>(r.length);
  if (internal::masked_crc32c(buffer.data(), length) != load_le32(buffer.data() + length)) {
    throw FormatError(where(path, r.number, r.offset) + ": data CRC mismatch (corrupt record)");
  }
}

class TfRecords final : public Dataset {
 public:
  TfRecords(std::unique_ptr<internal::FilePool> files, std::vector<Record> records,
            TfRecordOptions options)
      : files_(std::move(files)), records_(std::move(records)), options_(std::move(options)) {
    std::uint32_t previous = UINT32_MAX;
    for (std::size_t i = 0; i < records_.size(); ++i) {
      if (records_[i].shard != previous) starts_.push_back(static_cast<std::int64_t>(i));
      previous = records_[i].shard;
    }
  }

  std::int64_t size() const override { return static_cast<std::int64_t>(records_.size()); }
  std::int64_t label(std::int64_t index) const override { return record(index).label; }
  const std::vector<std::string>& classes() const override { return options_.classes; }
  std::vector<std::int64_t> shard_starts() const override { return starts_; }

  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override {
    internal::check_options(options);
    const std::string bytes = image_bytes(index);
    return decode_image(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), options,
                        source(index));
  }

  std::vector<std::uint8_t> encoded(std::int64_t index) const override {
    const std::string bytes = image_bytes(index);
    return {bytes.begin(), bytes.end()};
  }

  std::string source(std::int64_t index) const override {
    const Record& r = record(index);
    return files_->path(r.shard) + "#" + std::to_string(r.number);
  }

 private:
  // The record's image feature, its framing, CRC and Example checked.
  std::string image_bytes(std::int64_t index) const {
    const Record& r = record(index);
    const std::string& path = files_->path(r.shard);
    std::vector<std::uint8_t> buffer(static_cast<std::size_t>(r.length + kFooterBytes));
    std::size_t got = 0;
    try {
      got = files_->read(r.shard, r.offset + kHeaderBytes, buffer.data(), buffer.size());
    } catch (const NotFound&) {
      throw FormatError(where(path, r.number, r.offset) +
                        ": the shard has gone since the dataset was opened");
    }
    check_data(path, r, buffer, got);
    return internal::parse_image_example(buffer.data(), static_cast<std::size_t>(r.length),
                                         options_.image_key, options_.label_key,
                                         where(path, r.number, r.offset))
        .image;
  }

  const Record& record(std::int64_t index) const {
    internal::check_index(index, size());
    return records_[static_cast<std::size_t>(index)];
  }

  std::unique_ptr<internal::FilePool> files_;
  std::vector<Record> records_;
  TfRecordOptions options_;
  std::vector<std::int64_t> starts_;
};

// The records of `shard` (number `s`), each one's framing, CRCs and Example checked.
std::vector<Record> scan_shard(const Shard& shard, std::uint32_t s,
                               const TfRecordOptions& options) {
  std::vector<Record> records;
  std::vector<std::uint8_t> buffer;
  std::uint8_t header[kHeaderBytes];
  std::uint64_t offset = 0;
  for (std::int64_t number = 0; offset < shard.size(); ++number) {
    const std::uint64_t left = shard.size() - offset;
    if (left < kHeaderBytes || shard.read(offset, header, kHeaderBytes) != kHeaderBytes) {
      throw FormatError(where(shard.path(), number, offset) + ": truncated record header (" +
                        std::to_string(std::min<std::uint64_t>(left, kHeaderBytes)) +
                        " of 12 bytes)");
    }
    if (internal::masked_crc32c(header, 8) != load_le32(header + 8)) {
      const bool gzip = offset == 0 && header[0] == 0x1f && header[1] == 0x8b;
      throw FormatError(where(shard.path(), number, offset) + ": length CRC mismatch (" +
                        (gzip ? "a gzip-compressed TFRecord file: decompress it first"
                              : "corrupt record, or not a TFRecord file") +
                        ")");
    }
    const std::uint64_t length = load_le64(header);
    if (length > left - kHeaderBytes || left - kHeaderBytes - length < kFooterBytes) {
      throw FormatError(where(shard.path(), number, offset) + ": truncated record (" +
                        std::to_string(length) + " data bytes and a 4-byte CRC expected, " +
                        std::to_string(left - kHeaderBytes) + " bytes left in the file)");
    }
    Record record{s, number, offset, length, 0};
    buffer.resize(static_cast<std::size_t>(length + kFooterBytes));
    check_data(shard.path(), record, buffer,
               shard.read(offset + kHeaderBytes, buffer.data(), buffer.size()));
    record.label = internal::parse_image_example(buffer.data(), static_cast<std::size_t>(length),
                                                 options.image_key, options.label_key,
                                                 where(shard.path(), number, offset))
                       .label;
    records.push_back(record);
    offset += kHeaderBytes + length + kFooterBytes;
  }
  return records;
}

std::vector<std::uint8_t> encode(const std::vector<Record>& records) {
  internal::IndexWriter w;
  w.u64(records.size());
  for (const Record& r : records) {
    w.u64(r.offset);
    w.u64(r.length);
    w.u64(static_cast<std::uint64_t>(r.label));
  }
  return std::move(w.bytes());
}

// Records from a cached index, each checked to lie inside the shard; throws FormatError if not.
std::vector<Record> decode(const std::vector<std::uint8_t>& payload, std::uint32_t s,
                           std::uint64_t shard_size) {
  internal::IndexReader r(payload);
  const std::uint64_t n = r.u64();
  if (n > payload.size() / 24) throw FormatError("index: count out of range");
  std::vector<Record> records;
  std::uint64_t expected = 0;  // records follow each other without gaps
  for (std::uint64_t k = 0; k < n; ++k) {
    Record rec{s, static_cast<std::int64_t>(k), r.u64(), r.u64(), 0};
    rec.label = static_cast<std::int64_t>(r.u64());
    if (rec.offset != expected || rec.length > shard_size ||
        shard_size - rec.length < rec.offset + kHeaderBytes + kFooterBytes) {
      throw FormatError("index: record out of range");
    }
    expected = rec.offset + kHeaderBytes + rec.length + kFooterBytes;
    records.push_back(rec);
  }
  if (expected != shard_size || !r.done()) throw FormatError("index: does not cover the shard");
  return records;
}

// Shard `s`'s records: from its cached index when valid, else scanned and cached.
std::vector<Record> shard_records(const std::string& path, std::uint32_t s,
                                  const TfRecordOptions& options) {
  const internal::FileStamp stamp = internal::file_stamp(path);
  const std::string key = "tfrecord 1\n" + options.image_key + "\n" + options.label_key;
  const std::string cached = internal::index_path(path, options.index_dir, "tfrecord");
  if (const auto payload = internal::load_index(cached, stamp, key)) {
    try {
      return decode(*payload, s, stamp.size);
    } catch (const FormatError&) {
      // A damaged index: scanned again below.
    }
  }
  std::vector<Record> records = scan_shard(Shard(path), s, options);
  internal::save_index(cached, stamp, key, encode(records));
  return records;
}

// Checks every label against the classes and names them "0".."max label" when none are given.
void resolve_classes(const std::vector<Record>& records, const std::vector<std::string>& paths,
                     TfRecordOptions& options) {
  const auto classes = static_cast<std::int64_t>(options.classes.size());
  const std::int64_t limit = classes > 0 ? classes : kMaxUnnamedClasses;
  std::int64_t max_label = 0;
  for (const Record& r : records) {
    if (r.label < 0 || r.label >= limit) {
      throw FormatError(where(paths[r.shard], r.number, r.offset) + ": label " +
                        std::to_string(r.label) + " out of range (" +
                        (classes > 0
                             ? std::to_string(classes) + " class names given"
                             : "0 to " + std::to_string(limit - 1) + " without class names") +
                        ")");
    }
    max_label = std::max(max_label, r.label);
  }
  if (classes == 0) {
    for (std::int64_t k = 0; k <= max_label; ++k) options.classes.push_back(std::to_string(k));
  }
}

}  // namespace

std::shared_ptr<Dataset> open_tfrecords(const std::string& pattern,
                                        const TfRecordOptions& options) {
  internal::require_example_support();
  if (options.image_key.empty() || options.label_key.empty()) {
    throw InvalidArgument("open_tfrecords: image_key and label_key must not be empty");
  }
  const std::vector<std::string> paths =
      internal::shard_paths(pattern, {".tfrec", ".tfrecord", ".tfrecords"});
  if (paths.size() > UINT32_MAX) throw InvalidArgument(pattern + ": too many shards");
  std::vector<std::vector<Record>> per_shard(paths.size());
  internal::parallel_for(paths.size(), options.threads, [&](std::size_t s) {
    per_shard[s] = shard_records(paths[s], static_cast<std::uint32_t>(s), options);
  });
  std::vector<Record> records;
  for (std::vector<Record>& shard : per_shard) {
    records.insert(records.end(), shard.begin(), shard.end());
    shard = {};
  }
  if (records.empty()) throw FormatError(pattern + ": the TFRecord files hold no records");
  TfRecordOptions kept = options;
  resolve_classes(records, paths, kept);
  return std::make_shared<TfRecords>(std::make_unique<internal::FilePool>(paths, options.max_open),
                                     std::move(records), std::move(kept));
}

}  // namespace tlcore
