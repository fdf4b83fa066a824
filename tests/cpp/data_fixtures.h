// Files for the data tests, written by the tests themselves: a temporary
// folder, synthetic photos, hand-built PNGs and tar archives.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

namespace tlcore::data_testing {

namespace fs = std::filesystem;

// A fresh folder under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "tlcore-data-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A photo-like BGR image: smooth gradients, a disc and a bar, with every channel
// different so a red/blue swap shows.
inline cv::Mat test_image(int width, int height, int seed = 0) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<std::uint8_t>(40 + 150 * x / width),
                    static_cast<std::uint8_t>((60 + seed * 37 + 100 * y / height) % 256),
                    static_cast<std::uint8_t>(220 - 120 * (x + y) / (width + height)));
    }
  }
  cv::circle(image, {width / 3, height / 2}, std::min(width, height) / 4, {30, 200, 90}, -1,
             cv::LINE_AA);
  cv::rectangle(image, {width / 2, height / 5}, {width * 4 / 5, height / 3}, {250, 40, 160}, -1);
  return image;
}

inline cv::Mat bgr_to_rgb(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, bgr.channels() == 4 ? cv::COLOR_BGRA2RGB : cv::COLOR_BGR2RGB);
  return rgb;
}

// Mean absolute difference per sample; both must have the same shape.
inline double mean_diff(const cv::Mat& a, const cv::Mat& b) {
  EXPECT_EQ(a.size(), b.size());
  EXPECT_EQ(a.type(), b.type());
  if (a.size() != b.size() || a.type() != b.type()) return 1e9;
  cv::Mat diff;
  cv::absdiff(a, b, diff);
  const cv::Scalar sum = cv::sum(diff);
  return (sum[0] + sum[1] + sum[2] + sum[3]) / static_cast<double>(a.total() * a.channels());
}

inline double max_diff(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat diff;
  cv::absdiff(a.reshape(1), b.reshape(1), diff);
  double max = 0;
  cv::minMaxLoc(diff, nullptr, &max);
  return max;
}

// A PNG written chunk by chunk, for what cv::imwrite cannot make: palette
// images and gray + alpha. `rows` holds the packed samples, row after row.
inline std::string make_png(int width, int height, int bit_depth, int color_type,
                            const std::string& rows, const std::string& palette = "") {
  auto be32 = [](std::uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    const auto crc = static_cast<std::uint32_t>(
        crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
    return be32(static_cast<std::uint32_t>(data.size())) + body + be32(crc);
  };
  const std::size_t stride = rows.size() / static_cast<std::size_t>(height);
  std::string filtered;  // each row starts with filter type 0 (none)
  for (int y = 0; y < height; ++y) filtered += '\0' + rows.substr(y * stride, stride);
  std::string compressed(compressBound(static_cast<uLong>(filtered.size())), '\0');
  uLongf length = static_cast<uLongf>(compressed.size());
  compress(reinterpret_cast<Bytef*>(compressed.data()), &length,
           reinterpret_cast<const Bytef*>(filtered.data()), static_cast<uLong>(filtered.size()));
  compressed.resize(length);

  std::string header =
      be32(static_cast<std::uint32_t>(width)) + be32(static_cast<std::uint32_t>(height));
  header += {static_cast<char>(bit_depth), static_cast<char>(color_type), 0, 0, 0};
  std::string png = "\x89PNG\r\n\x1A\n";
  png += chunk("IHDR", header);
  if (!palette.empty()) png += chunk("PLTE", palette);
  png += chunk("IDAT", compressed) + chunk("IEND", "");
  return png;
}

struct TarMember {
  std::string name;
  std::string data;
  bool folder = false;
};

// A tar archive through libarchive's writer; `filter` is "", "gzip", "bzip2" or "xz".
inline void write_tar(const std::string& path, const std::vector<TarMember>& members,
                      const std::string& filter = "") {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_write_new(), archive_write_free);
  if (filter == "gzip") archive_write_add_filter_gzip(a.get());
  if (filter == "bzip2") archive_write_add_filter_bzip2(a.get());
  if (filter == "xz") archive_write_add_filter_xz(a.get());
  archive_write_set_format_pax_restricted(a.get());
  ASSERT_EQ(archive_write_open_filename(a.get(), path.c_str()), ARCHIVE_OK);
  for (const TarMember& m : members) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                               archive_entry_free);
    archive_entry_set_pathname(e.get(), m.name.c_str());
    archive_entry_set_filetype(e.get(), m.folder ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e.get(), m.folder ? 0755 : 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(m.data.size()));
    ASSERT_EQ(archive_write_header(a.get(), e.get()), ARCHIVE_OK);
    if (!m.data.empty()) {
      ASSERT_EQ(archive_write_data(a.get(), m.data.data(), m.data.size()),
                static_cast<la_ssize_t>(m.data.size()));
    }
  }
  ASSERT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
}

inline void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// The what() of the E that f throws; a test failure when it throws nothing.
template <typename E, typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return {};
}

}  // namespace tlcore::data_testing
