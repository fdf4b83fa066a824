// MNIST-style IDX files (uint8 images N x H x W and labels N), plain or gzipped.
#include <zlib.h>

#include <algorithm>
#include <memory>
#include <utility>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "internal/checks.h"
#include "internal/file_io.h"
#include "tlcore/data/sources.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

constexpr std::uint32_t kImagesMagic = 0x00000803;
constexpr std::uint32_t kLabelsMagic = 0x00000801;

class Idx final : public Dataset {
 public:
  Idx(std::string images_path, std::vector<std::uint8_t> images, std::size_t pixels_offset,
      int height, int width, std::vector<std::uint8_t> labels, std::size_t labels_offset,
      std::vector<std::string> classes)
      : images_path_(std::move(images_path)),
        images_(std::move(images)),
        pixels_offset_(pixels_offset),
        height_(height),
        width_(width),
        labels_(std::move(labels)),
        labels_offset_(labels_offset),
        classes_(std::move(classes)) {}

  std::int64_t size() const override {
    return static_cast<std::int64_t>(labels_.size() - labels_offset_);
  }

  std::int64_t label(std::int64_t index) const override {
    internal::check_index(index, size());
    return labels_[labels_offset_ + static_cast<std::size_t>(index)];
  }

  const std::vector<std::string>& classes() const override { return classes_; }

  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override {
    internal::check_options(options);
    internal::check_index(index, size());
    const std::size_t plane = static_cast<std::size_t>(height_) * static_cast<std::size_t>(width_);
    // The header only wraps the dataset's memory: both branches copy out of it.
    const cv::Mat gray(height_, width_, CV_8UC1,
                       const_cast<std::uint8_t*>(images_.data() + pixels_offset_ +
                                                 static_cast<std::size_t>(index) * plane));
    cv::Mat out;
    if (options.channels == 1) {
      gray.copyTo(out);
    } else {
      cv::cvtColor(gray, out, cv::COLOR_GRAY2RGB);
    }
    return out;
  }

  std::string source(std::int64_t index) const override {
    internal::check_index(index, size());
    return images_path_ + "#" + std::to_string(index);
  }

 private:
  std::string images_path_;
  std::vector<std::uint8_t> images_;
  std::size_t pixels_offset_;
  int height_;
  int width_;
  std::vector<std::uint8_t> labels_;
  std::size_t labels_offset_;
  std::vector<std::string> classes_;
};

[[noreturn]] void throw_gzip(const std::string& path, const char* problem, const z_stream& zs) {
  throw FormatError(path + ": " + problem + " gzip data" +
                    (zs.msg ? std::string(" (") + zs.msg + ")" : ""));
}

// Inflates a whole gzip file held in memory (concatenated members included).
std::vector<std::uint8_t> gunzip(const std::string& path, const std::vector<std::uint8_t>& in) {
  // The gzip trailer holds the inflated size modulo 2^32: a good first guess,
  // unless the file is damaged; deflate never expands more than 1032 to 1.
  const std::uint8_t* t = in.data() + in.size() - 4;
  const std::size_t trailer =
      t[0] | (t[1] << 8) | (t[2] << 16) | (static_cast<std::size_t>(t[3]) << 24);
  const std::size_t hint = trailer <= in.size() * 1032 ? trailer : in.size() * 4;
  std::vector<std::uint8_t> out(std::max<std::size_t>(hint + 1, 1 << 16));

  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error(path + ": cannot start zlib");
  const std::unique_ptr<z_stream, int (*)(z_stream*)> end(&zs, inflateEnd);
  constexpr std::size_t kStep = 1u << 30;  // avail_in/avail_out are 32-bit
  std::size_t in_pos = 0;
  std::size_t out_pos = 0;
  for (;;) {
    if (zs.avail_in == 0) {
      const std::size_t chunk = std::min(in.size() - in_pos, kStep);
      zs.next_in = const_cast<Bytef*>(in.data() + in_pos);
      zs.avail_in = static_cast<uInt>(chunk);
      in_pos += chunk;
    }
    if (out_pos == out.size()) out.resize(out.size() * 2);
    const std::size_t room = std::min(out.size() - out_pos, kStep);
    zs.next_out = out.data() + out_pos;
    zs.avail_out = static_cast<uInt>(room);
    const int r = inflate(&zs, Z_NO_FLUSH);
    out_pos += room - zs.avail_out;
    const bool input_done = zs.avail_in == 0 && in_pos == in.size();
    if (r == Z_STREAM_END) {
      if (input_done) break;
      inflateReset(&zs);
    } else if (r == Z_BUF_ERROR && input_done) {
      throw_gzip(path, "truncated", zs);
    } else if (r != Z_OK && r != Z_BUF_ERROR) {
      throw_gzip(path, "corrupt", zs);
    }
  }
  out.resize(out_pos);
  return out;
}

// The file's bytes, inflated when it starts with the gzip magic 1f 8b.
std::vector<std::uint8_t> read_idx_file(const std::string& path) {
  std::vector<std::uint8_t> raw = internal::read_file(path);
  if (raw.size() < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;
  if (raw.size() < 18) throw FormatError(path + ": truncated gzip data");
  return gunzip(path, raw);
}

std::uint32_t big_endian(const std::uint8_t* p) {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (static_cast<std::uint32_t>(p[1]) << 16) |
         (static_cast<std::uint32_t>(p[2]) << 8) | p[3];
}

std::string hex(std::uint32_t value) {
  static const char* digits = "0123456789abcdef";
  std::string out = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) out += digits[(value >> shift) & 0xF];
  return out;
}

// Checks the magic and returns the header's dimensions.
std::vector<std::uint32_t> read_header(const std::string& path,
                                       const std::vector<std::uint8_t>& bytes, std::uint32_t magic,
                                       const char* what) {
  const std::size_t dims = magic & 0xFF;
  const std::size_t header = 4 + 4 * dims;
  if (bytes.size() >= 4 && big_endian(bytes.data()) != magic) {
    throw FormatError(path + ": wrong magic " + hex(big_endian(bytes.data())) + " for IDX " + what +
                      " (expected " + hex(magic) + ")");
  }
  if (bytes.size() < header) {
    throw FormatError(path + ": too short for an IDX " + what + " header (" +
                      std::to_string(bytes.size()) + " bytes)");
  }
  std::vector<std::uint32_t> shape(dims);
  for (std::size_t d = 0; d < dims; ++d) shape[d] = big_endian(bytes.data() + 4 + 4 * d);
  std::uint64_t expected = 1;
  for (std::uint32_t n : shape) expected *= n;
  const std::uint64_t data = bytes.size() - header;
  const bool overflow = shape.size() == 3 && shape[1] != 0 && shape[2] != 0 &&
                        shape[0] > UINT64_MAX / shape[1] / shape[2];
  if (overflow || data != expected) {
    std::string dims_text;
    for (std::uint32_t n : shape) dims_text += (dims_text.empty() ? "" : " x ") + std::to_string(n);
    throw FormatError(path + ": header says " + dims_text + " but the file holds " +
                      std::to_string(data) + " data bytes (truncated or corrupt)");
  }
  return shape;
}

}  // namespace

std::shared_ptr<Dataset> open_idx(const std::string& images_path, const std::string& labels_path,
                                  std::vector<std::string> class_names) {
  std::vector<std::uint8_t> images = read_idx_file(images_path);
  const std::vector<std::uint32_t> shape = read_header(images_path, images, kImagesMagic, "images");
  std::vector<std::uint8_t> labels = read_idx_file(labels_path);
  const std::uint32_t count = read_header(labels_path, labels, kLabelsMagic, "labels")[0];

  if (shape[0] != count) {
    throw FormatError(images_path + " holds " + std::to_string(shape[0]) + " images but " +
                      labels_path + " holds " + std::to_string(count) + " labels");
  }
  if (count == 0 || shape[1] == 0 || shape[2] == 0 || shape[1] > INT32_MAX ||
      shape[2] > INT32_MAX) {
    throw FormatError(images_path + ": no images, or image size " + std::to_string(shape[1]) +
                      " x " + std::to_string(shape[2]) + " unusable");
  }
  constexpr std::size_t kLabelsOffset = 8;
  const std::uint8_t max_label = *std::max_element(labels.begin() + kLabelsOffset, labels.end());
  if (class_names.empty()) {
    for (int c = 0; c <= max_label; ++c) class_names.push_back(std::to_string(c));
  } else if (max_label >= class_names.size()) {
    throw FormatError(labels_path + ": label " + std::to_string(max_label) + " out of range for " +
                      std::to_string(class_names.size()) + " class names");
  }
  return std::make_shared<Idx>(images_path, std::move(images), 16, static_cast<int>(shape[1]),
                               static_cast<int>(shape[2]), std::move(labels), kLabelsOffset,
                               std::move(class_names));
}

}  // namespace tlcore
