// Decoding of every supported format against OpenCV's own reader (the oracle),
// reduced JPEG decoding, and the errors for damaged input.
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <cmath>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "data_fixtures.h"
#include "tlcore/data/decode.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

using namespace data_testing;

std::string encode(const std::string& ext, const cv::Mat& image, std::vector<int> params = {}) {
  std::vector<std::uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, image, buf, params));
  return std::string(buf.begin(), buf.end());
}

cv::Mat decode(const std::string& bytes, int channels = 3, int min_side = 0) {
  DecodeOptions options;
  options.channels = channels;
  options.min_side = min_side;
  return decode_image(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), options,
                      "test.img");
}

// OpenCV's reader of the same file, as RGB or gray.
cv::Mat oracle(const std::string& path, int flags = cv::IMREAD_COLOR) {
  cv::Mat image = cv::imread(path, flags);
  EXPECT_FALSE(image.empty()) << path;
  return image.channels() == 3 ? bgr_to_rgb(image) : image;
}

void expect_layout(const cv::Mat& m, int rows, int cols, int channels) {
  EXPECT_EQ(m.rows, rows);
  EXPECT_EQ(m.cols, cols);
  EXPECT_EQ(m.type(), CV_8UC(channels));
  EXPECT_TRUE(m.isContinuous());
}

TEST(Decode, JpegMatchesOpenCV) {
  TempDir dir;
  const cv::Mat original = test_image(96, 64);
  const std::string path = dir / "photo.jpg";
  write_bytes(path, encode(".jpg", original, {cv::IMWRITE_JPEG_QUALITY, 95}));

  const cv::Mat rgb = read_image(path);
  expect_layout(rgb, 64, 96, 3);
  EXPECT_LT(mean_diff(rgb, oracle(path)), 0.5);
  // Against the pixels before compression: RGB order, not BGR.
  EXPECT_LT(mean_diff(rgb, bgr_to_rgb(original)), 4.0);

  const cv::Mat gray = read_image(path, {1, 0});
  expect_layout(gray, 64, 96, 1);
  EXPECT_LT(mean_diff(gray, oracle(path, cv::IMREAD_GRAYSCALE)), 1.0);
}

TEST(Decode, GrayJpegToRgbRepeatsTheChannel) {
  TempDir dir;
  cv::Mat gray_original;
  cv::cvtColor(test_image(40, 30), gray_original, cv::COLOR_BGR2GRAY);
  const std::string path = dir / "gray.jpg";
  write_bytes(path, encode(".jpg", gray_original));

  const cv::Mat rgb = read_image(path);
  expect_layout(rgb, 30, 40, 3);
  const cv::Mat gray = oracle(path, cv::IMREAD_GRAYSCALE);
  cv::Mat planes[3];
  cv::split(rgb, planes);
  for (const cv::Mat& plane : planes) EXPECT_LT(mean_diff(plane, gray), 0.5);
}

TEST(Decode, CmykJpegBecomesRgb) {
  // Adobe CMYK stores inverted inks: 255 - C etc. Built from a known RGB image.
  const cv::Mat rgb = bgr_to_rgb(test_image(64, 48));
  cv::Mat cmyk(rgb.rows, rgb.cols, CV_8UC4);
  for (int y = 0; y < rgb.rows; ++y) {
    for (int x = 0; x < rgb.cols; ++x) {
      const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
      const int k = std::max({p[0], p[1], p[2], std::uint8_t{1}});
      cmyk.at<cv::Vec4b>(y, x) = cv::Vec4b(static_cast<std::uint8_t>(std::lround(p[0] * 255.0 / k)),
                                           static_cast<std::uint8_t>(std::lround(p[1] * 255.0 / k)),
                                           static_cast<std::uint8_t>(std::lround(p[2] * 255.0 / k)),
                                           static_cast<std::uint8_t>(k));
    }
  }
  tjhandle tj = tjInitCompress();
  ASSERT_NE(tj, nullptr);
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, cmyk.data, cmyk.cols, 0, cmyk.rows, TJPF_CMYK, &jpeg, &size, TJSAMP_444,
                        98, 0),
            0)
      << tjGetErrorStr2(tj);
  const std::string bytes(reinterpret_cast<char*>(jpeg), size);
  tjFree(jpeg);
  tjDestroy(tj);

  TempDir dir;
  const std::string path = dir / "cmyk.jpg";
  write_bytes(path, bytes);
  const cv::Mat decoded = read_image(path);
  expect_layout(decoded, 48, 64, 3);
  EXPECT_LT(mean_diff(decoded, oracle(path)), 1.5);
  EXPECT_LT(mean_diff(decoded, rgb), 4.0);

  const cv::Mat gray = read_image(path, {1, 0});
  expect_layout(gray, 48, 64, 1);
  cv::Mat expected_gray;
  cv::cvtColor(oracle(path), expected_gray, cv::COLOR_RGB2GRAY);
  EXPECT_LT(mean_diff(gray, expected_gray), 1.5);
}

TEST(Decode, ReducedJpegKeepsShorterSideAtLeastMinSide) {
  TempDir dir;
  const std::string path = dir / "big.jpg";
  write_bytes(path, encode(".jpg", test_image(640, 480)));
  const struct {
    int min_side, width, height;
  } cases[] = {{0, 640, 480},   {60, 80, 60},    {61, 160, 120},  {100, 160, 120}, {120, 160, 120},
               {121, 320, 240}, {240, 320, 240}, {241, 640, 480}, {1000, 640, 480}};
  for (const auto& c : cases) {
    const cv::Mat m = read_image(path, {3, c.min_side});
    expect_layout(m, c.height, c.width, 3);
  }
  // The same DCT scaling as libjpeg's scale_denom, which OpenCV exposes.
  EXPECT_LT(mean_diff(read_image(path, {3, 100}), oracle(path, cv::IMREAD_REDUCED_COLOR_4)), 1.0);
  EXPECT_LT(mean_diff(read_image(path, {1, 60}), oracle(path, cv::IMREAD_REDUCED_GRAYSCALE_8)),
            1.0);
}

// Without DCT scaling, other formats are reduced after decoding by the factor a
// JPEG would take (here 1/4: 1/8 would leave a side under 8): each pixel the
// mean of its 4 x 4 block, as Pillow's reduce().
TEST(Decode, MinSideReducesOtherFormatsByBlockMeans) {
  const cv::Mat bgr = test_image(64, 32);
  const cv::Mat m = decode(encode(".png", bgr), 3, 8);
  expect_layout(m, 8, 16, 3);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 16; ++x) {
      for (int c = 0; c < 3; ++c) {
        int sum = 0;
        for (int k = 0; k < 16; ++k) sum += bgr.at<cv::Vec3b>(4 * y + k / 4, 4 * x + k % 4)[2 - c];
        EXPECT_NEAR(m.at<cv::Vec3b>(y, x)[c], sum / 16.0, 1.0) << y << "," << x << "," << c;
      }
    }
  }
  expect_layout(decode(encode(".png", bgr), 3, 9), 16, 32, 3);  // 1/4 would leave 8 < 9
}

TEST(Decode, GrayPng) {
  cv::Mat gray;
  cv::cvtColor(test_image(33, 17), gray, cv::COLOR_BGR2GRAY);
  const std::string png = encode(".png", gray);
  const cv::Mat one = decode(png, 1);
  expect_layout(one, 17, 33, 1);
  EXPECT_EQ(max_diff(one, gray), 0);
  const cv::Mat three = decode(png, 3);
  expect_layout(three, 17, 33, 3);
  cv::Mat expected;
  cv::cvtColor(gray, expected, cv::COLOR_GRAY2RGB);
  EXPECT_EQ(max_diff(three, expected), 0);
}

TEST(Decode, RgbaPngDropsAlpha) {
  const cv::Mat bgr = test_image(30, 20);
  cv::Mat bgra;
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  for (int y = 0; y < bgra.rows; ++y) {
    for (int x = 0; x < bgra.cols; ++x) bgra.at<cv::Vec4b>(y, x)[3] = static_cast<uchar>(x * 8);
  }
  const cv::Mat rgb = decode(encode(".png", bgra));
  expect_layout(rgb, 20, 30, 3);
  EXPECT_EQ(max_diff(rgb, bgr_to_rgb(bgr)), 0);
}

TEST(Decode, PalettePng) {
  const std::string palette = std::string("\xFF\x00\x00", 3) + std::string("\x00\x80\xFF", 3) +
                              std::string("\x10\x20\x30", 3);
  std::string rows;
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 5; ++x) rows += static_cast<char>((x + y) % 3);
  }
  TempDir dir;
  const std::string path = dir / "palette.png";
  write_bytes(path, make_png(5, 4, 8, 3, rows, palette));

  const cv::Mat rgb = read_image(path);
  expect_layout(rgb, 4, 5, 3);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 5; ++x) {
      const int i = (x + y) % 3;
      const cv::Vec3b expected(static_cast<uchar>(palette[3 * i]),
                               static_cast<uchar>(palette[3 * i + 1]),
                               static_cast<uchar>(palette[3 * i + 2]));
      EXPECT_EQ(rgb.at<cv::Vec3b>(y, x), expected) << x << "," << y;
    }
  }
  EXPECT_EQ(max_diff(rgb, oracle(path)), 0);
}

TEST(Decode, GrayAlphaPng) {
  std::string rows;
  for (int i = 0; i < 6 * 3; ++i) rows += {static_cast<char>(i * 13), static_cast<char>(255 - i)};
  const cv::Mat rgb = decode(make_png(6, 3, 8, 4, rows));
  expect_layout(rgb, 3, 6, 3);
  for (int i = 0; i < 18; ++i) {
    const auto v = static_cast<uchar>(i * 13);
    EXPECT_EQ(rgb.at<cv::Vec3b>(i / 6, i % 6), cv::Vec3b(v, v, v));
  }
}

TEST(Decode, SixteenBitPngScalesBy257) {
  cv::Mat deep(16, 16, CV_16UC3);
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      const auto v = static_cast<std::uint16_t>((y * 16 + x) * 257 + x * 11);
      deep.at<cv::Vec3w>(y, x) =
          cv::Vec3w(v, static_cast<std::uint16_t>(65535 - v), static_cast<std::uint16_t>(x * 200));
    }
  }
  const cv::Mat rgb = decode(encode(".png", deep));
  expect_layout(rgb, 16, 16, 3);
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      const cv::Vec3w bgr = deep.at<cv::Vec3w>(y, x);
      for (int c = 0; c < 3; ++c) {
        const long expected = std::lround(bgr[2 - c] / 257.0);
        EXPECT_EQ(rgb.at<cv::Vec3b>(y, x)[c], expected) << x << "," << y << "," << c;
      }
    }
  }
}

TEST(Decode, Bmp) {
  TempDir dir;
  const cv::Mat bgr = test_image(31, 17);
  const std::string path = dir / "image.bmp";
  write_bytes(path, encode(".bmp", bgr));
  const cv::Mat rgb = read_image(path);
  expect_layout(rgb, 17, 31, 3);
  EXPECT_EQ(max_diff(rgb, bgr_to_rgb(bgr)), 0);
  EXPECT_EQ(max_diff(rgb, oracle(path)), 0);
}

TEST(Decode, Webp) {
  if (!cv::haveImageWriter(".webp")) GTEST_SKIP() << "OpenCV built without WebP";
  TempDir dir;
  const cv::Mat bgr = test_image(40, 24);
  const std::string lossless = dir / "lossless.webp";
  write_bytes(lossless, encode(".webp", bgr, {cv::IMWRITE_WEBP_QUALITY, 101}));
  EXPECT_EQ(max_diff(read_image(lossless), bgr_to_rgb(bgr)), 0);

  const std::string lossy = dir / "lossy.webp";
  write_bytes(lossy, encode(".webp", bgr, {cv::IMWRITE_WEBP_QUALITY, 80}));
  const cv::Mat rgb = read_image(lossy);
  expect_layout(rgb, 24, 40, 3);
  EXPECT_LT(mean_diff(rgb, oracle(lossy)), 0.5);
}

TEST(Decode, HeaderDimensionsMatchOpenCV) {
  const cv::Mat bgr = test_image(45, 23);
  std::vector<std::pair<std::string, std::vector<int>>> formats{
      {".jpg", {}}, {".png", {}}, {".bmp", {}}};
  if (cv::haveImageWriter(".webp")) {
    formats.push_back({".webp", {cv::IMWRITE_WEBP_QUALITY, 101}});  // VP8L
    formats.push_back({".webp", {cv::IMWRITE_WEBP_QUALITY, 80}});   // VP8
  }
  for (const auto& [ext, params] : formats) {
    const std::string bytes = encode(ext, bgr, params);
    const cv::Mat decoded =
        cv::imdecode(std::vector<std::uint8_t>(bytes.begin(), bytes.end()), cv::IMREAD_UNCHANGED);
    const auto [width, height] =
        image_dimensions(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    EXPECT_EQ(width, decoded.cols) << ext;
    EXPECT_EQ(height, decoded.rows) << ext;

    DecodeOptions small;
    small.max_pixels = 45 * 23 - 1;
    EXPECT_THROW(decode_image(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(),
                              small, "big" + ext),
                 FormatError)
        << ext;
    small.max_pixels = 45 * 23;
    EXPECT_EQ(decode_image(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), small,
                           "fits" + ext)
                  .cols,
              45);
  }
  const std::string text = "not an image at all";
  EXPECT_EQ(image_dimensions(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()),
            (std::pair<std::int64_t, std::int64_t>{0, 0}));
}

TEST(Decode, TruncatedJpegIsAnError) {
  const std::string jpeg = encode(".jpg", test_image(128, 96));
  for (std::size_t keep : {jpeg.size() / 2, jpeg.size() - 2, std::size_t{300}, std::size_t{20}}) {
    const std::string message = error_of<FormatError>([&] { decode(jpeg.substr(0, keep), 3, 0); });
    EXPECT_NE(message.find("test.img"), std::string::npos) << message;
    EXPECT_NE(message.find("JPEG"), std::string::npos) << message;
  }
  const std::string message =
      error_of<FormatError>([&] { decode(jpeg.substr(0, jpeg.size() / 2), 3, 32); });
  EXPECT_NE(message.find("Premature end of JPEG file"), std::string::npos) << message;
}

TEST(Decode, TruncatedOtherFormatsAreErrors) {
  std::vector<std::pair<std::string, std::string>> files = {
      {"PNG", encode(".png", test_image(64, 48))}, {"BMP", encode(".bmp", test_image(64, 48))}};
  if (cv::haveImageWriter(".webp")) files.emplace_back("WEBP", encode(".webp", test_image(64, 48)));
  for (const auto& file : files) {
    const std::string& format = file.first;
    const std::string& bytes = file.second;  // a plain reference: lambdas capture it in C++17
    for (std::size_t keep : {bytes.size() / 2, bytes.size() - 8, std::size_t{30}}) {
      const std::string message = error_of<FormatError>([&] { decode(bytes.substr(0, keep)); });
      EXPECT_NE(message.find("test.img"), std::string::npos) << format << ": " << message;
      EXPECT_NE(message.find(format), std::string::npos) << format << ": " << message;
    }
  }
}

// OpenCV reads more formats than tlcore takes; those readers skip the pixel limit, and
// some abort the process on hostile bytes (the DICOM reader did, found by fuzz_image_decode).
TEST(Decode, FormatsBesidesJpegPngBmpWebpAreRefusedBeforeAnyDecoder) {
  std::vector<std::string> others = {std::string(128, '\0') + "DICM", "II*"};
  for (const char* ext : {".tiff", ".ppm"})
    if (cv::haveImageWriter(ext)) others.push_back(encode(ext, test_image(16, 16)));
  for (const auto& bytes : others) {
    const std::string message = error_of<FormatError>([&] { decode(bytes); });
    EXPECT_NE(message.find("not an image"), std::string::npos) << message;
  }
}

// A corrupt Huffman table used to leave the thread's TurboJPEG handle broken: every
// later JPEG decoded on that thread was "corrupt" too (found by benchmarks/hostile.py).
TEST(Decode, ACorruptJpegDoesNotBreakLaterJpegsOnTheThread) {
  const std::string good = encode(".jpg", test_image(64, 48));
  const std::size_t dht = good.find("\xFF\xC4");
  ASSERT_NE(dht, std::string::npos);
  std::string bad = good;
  bad.replace(dht + 5, 16, std::string(16, '\xFF'));  // 16 code counts summing far over 256
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW(decode(bad), FormatError);
    EXPECT_EQ(decode(good).size(), cv::Size(64, 48)) << i;
  }
}

TEST(Decode, EmptyAndTextAreErrors) {
  TempDir dir;
  const std::string empty = dir / "empty.jpg";
  write_bytes(empty, "");
  std::string message = error_of<FormatError>([&] { read_image(empty); });
  EXPECT_NE(message.find(empty), std::string::npos) << message;
  EXPECT_NE(message.find("empty"), std::string::npos) << message;

  const std::string text = dir / "notes.jpg";
  write_bytes(text, "these are not the pixels you are looking for\n");
  message = error_of<FormatError>([&] { read_image(text); });
  EXPECT_NE(message.find(text), std::string::npos) << message;
  EXPECT_NE(message.find("not an image"), std::string::npos) << message;
}

TEST(Decode, MissingFileAndBadOptions) {
  TempDir dir;
  const std::string missing = dir / "missing.png";
  const std::string message = error_of<NotFound>([&] { read_image(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;

  const std::string png = encode(".png", test_image(8, 8));
  EXPECT_THROW(decode(png, 4), InvalidArgument);
  EXPECT_THROW(decode(png, 3, -1), InvalidArgument);
}

TEST(Decode, ImageExtensions) {
  for (const char* name : {"a.jpg", "b.JPEG", "dir/c.Png", "d.bmp", "e.WebP", "x.y.jpeg"}) {
    EXPECT_TRUE(has_image_extension(name)) << name;
  }
  for (const char* name : {"a.gif", "jpg", "b.jpg.txt", "c.tiff", "dir.jpg/file", ""}) {
    EXPECT_FALSE(has_image_extension(name)) << name;
  }
}

}  // namespace
}  // namespace tlcore
