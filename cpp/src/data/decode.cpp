#include "tlcore/data/decode.h"

#include <turbojpeg.h>
#ifdef TLCORE_HAVE_LIBWEBP
#include <webp/decode.h>
#endif

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <opencv2/imgproc.hpp>
#ifdef TLCORE_HAVE_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include "internal/checks.h"
#include "internal/file_io.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

struct TjDestroy {
  void operator()(void* handle) const { tjDestroy(handle); }
};

// A tjhandle is not safe to share between threads and costs an allocation to
// create, so each thread keeps its own for its lifetime, or until a call fails.
std::unique_ptr<void, TjDestroy>& decompressor_slot() {
  thread_local std::unique_ptr<void, TjDestroy> handle;
  return handle;
}

tjhandle decompressor() {
  auto& handle = decompressor_slot();
  if (!handle) handle.reset(tjInitDecompress());
  if (!handle) {
    throw Error(std::string("TurboJPEG: cannot create a decompressor: ") + tjGetErrorStr2(nullptr));
  }
  return handle.get();
}

// A failed call can leave the handle's libjpeg state broken (after a corrupt Huffman
// table, every later JPEG on the thread was "corrupt" too): the next call starts afresh.
void discard_decompressor() { decompressor_slot().reset(); }

[[noreturn]] void throw_jpeg(const std::string& message) {
  discard_decompressor();
  throw FormatError(message);
}

bool starts_with(const std::uint8_t* data, std::size_t size, const char* magic, std::size_t n,
                 std::size_t at = 0) {
  return size >= at + n && std::memcmp(data + at, magic, n) == 0;
}

bool is_jpeg(const std::uint8_t* data, std::size_t size) {
  return starts_with(data, size, "\xFF\xD8\xFF", 3);
}

const char* format_name(const std::uint8_t* data, std::size_t size) {
  if (starts_with(data, size, "\x89PNG\r\n\x1A\n", 8)) return "PNG";
  if (starts_with(data, size, "BM", 2)) return "BMP";
  if (starts_with(data, size, "RIFF", 4) && starts_with(data, size, "WEBP", 4, 8)) return "WEBP";
  return nullptr;
}

std::uint32_t big_endian32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
}

std::uint32_t little_endian(const std::uint8_t* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

void check_pixels(const std::uint8_t* data, std::size_t size, const DecodeOptions& options,
                  const std::string& source) {
  if (options.max_pixels <= 0) return;
  const auto [width, height] = image_dimensions(data, size);
  // Divided, not multiplied: a header may claim 2^32 x 2^32.
  if (height > 0 && width > options.max_pixels / height) {
    throw FormatError(source + ": image of " + std::to_string(width) + " x " +
                      std::to_string(height) + " pixels is over the limit of " +
                      std::to_string(options.max_pixels) + " pixels");
  }
}

// The largest DCT reduction (1/8, 1/4, 1/2) that keeps the shorter side >= min_side.
tjscalingfactor choose_scale(int width, int height, int min_side) {
  if (min_side > 0) {
    for (int denom : {8, 4, 2}) {
      const tjscalingfactor factor{1, denom};
      if (std::min(TJSCALED(width, factor), TJSCALED(height, factor)) >= min_side) return factor;
    }
  }
  return {1, 1};
}

// Adobe CMYK JPEGs (the only kind in practice) store inverted ink values, so
// each channel times K / 255 is the RGB value; the same rule as OpenCV's libjpeg path.
cv::Mat cmyk_to_rgb(const cv::Mat& cmyk) {
  cv::Mat rgb(cmyk.rows, cmyk.cols, CV_8UC3);
  const std::uint8_t* src = cmyk.ptr<std::uint8_t>();
  std::uint8_t* dst = rgb.ptr<std::uint8_t>();
  const std::size_t pixels = cmyk.total();
  for (std::size_t i = 0; i < pixels; ++i, src += 4, dst += 3) {
    const unsigned k = src[3];
    for (int c = 0; c < 3; ++c) dst[c] = static_cast<std::uint8_t>((src[c] * k + 127) / 255);
  }
  return rgb;
}

cv::Mat decode_jpeg(const std::uint8_t* data, std::size_t size, const DecodeOptions& options,
                    const std::string& source) {
  tjhandle tj = decompressor();
  const auto jpeg_size = static_cast<unsigned long>(size);
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, data, jpeg_size, &width, &height, &subsampling, &colorspace) != 0) {
    throw_jpeg(source + ": corrupt JPEG header (" + tjGetErrorStr2(tj) + ")");
  }
  const tjscalingfactor scale = choose_scale(width, height, options.min_side);
  const int out_width = TJSCALED(width, scale);
  const int out_height = TJSCALED(height, scale);

  // libjpeg cannot convert CMYK to RGB itself: decode the inks, convert below.
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  int pixel_format = TJPF_RGB;
  int type = CV_8UC3;
  if (cmyk) {
    pixel_format = TJPF_CMYK;
    type = CV_8UC4;
  } else if (options.channels == 1) {
    pixel_format = TJPF_GRAY;
    type = CV_8UC1;
  }
  cv::Mat out(out_height, out_width, type);
  // Warnings ("Premature end of JPEG file") mean missing or damaged data that
  // libjpeg would paint grey: they are errors here.
  if (tjDecompress2(tj, data, jpeg_size, out.data, out_width, static_cast<int>(out.step[0]),
                    out_height, pixel_format, TJFLAG_STOPONWARNING) != 0) {
    const bool warning = tjGetErrorCode(tj) == TJERR_WARNING;
    throw_jpeg(source + (warning ? ": truncated or corrupt JPEG data (" : ": corrupt JPEG (") +
               tjGetErrorStr2(tj) + ")");
  }
  if (!cmyk) return out;
  cv::Mat rgb = cmyk_to_rgb(out);
  if (options.channels == 3) return rgb;
  cv::Mat gray;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  return gray;
}

// OpenCV picks a decoder by testing each one's signature in turn. Its WebP reader takes
// only a header libwebp accepts; for any other "RIFF....WEBP" bytes OpenCV goes on to
// its later readers, and its DICOM reader (GDCM, for "DICM" at byte 128) aborts the
// process on hostile bytes. So WebP gets OpenCV's own test first (WebPGetFeatures on
// the first 32 bytes), and without libwebp it is refused.
void check_webp_header(const std::uint8_t* data, std::size_t size, const char* format,
                       const std::string& source) {
  if (std::strcmp(format, "WEBP") != 0) return;
#ifdef TLCORE_HAVE_LIBWEBP
  constexpr std::size_t kHeader = 32;  // OpenCV's WEBP_HEADER_SIZE
  WebPBitstreamFeatures features;
  if (size < kHeader || WebPGetFeatures(data, kHeader, &features) != VP8_STATUS_OK) {
    throw FormatError(source + ": truncated or corrupt WEBP header");
  }
#else
  throw Unsupported(source + ": WEBP data, but this tlcore was built without libwebp");
#endif
}

// What JPEG's DCT scaling does for the other formats, after the fact: a box
// reduction by 2, 4 or 8 (the same choice as choose_scale), before any colour
// work, so a picture at the pixel limit is expanded to RGB and resampled small.
cv::Mat reduced(const cv::Mat& image, int min_side) {
  const tjscalingfactor scale = choose_scale(image.cols, image.rows, min_side);
  if (scale.denom == 1) return image;
  cv::Mat out;
  cv::resize(image, out, cv::Size(TJSCALED(image.cols, scale), TJSCALED(image.rows, scale)), 0, 0,
             cv::INTER_AREA);
  return out;
}

// The colour conversions below write over the decoded pixels: a picture at the
// pixel limit is over 100 MB, and a second buffer would double what it costs.
cv::Mat bgr_to_rgb_in_place(cv::Mat& bgr) {
  for (int y = 0; y < bgr.rows; ++y) {
    std::uint8_t* p = bgr.ptr<std::uint8_t>(y);
    for (int x = 0; x < bgr.cols; ++x, p += 3) std::swap(p[0], p[2]);
  }
  return bgr;
}

// RGB packed into the front of the BGRA buffer (each pixel moves to a lower
// address, so a forward pass never overwrites what it has still to read).
cv::Mat bgra_to_rgb_in_place(cv::Mat& bgra) {
  const int rows = bgra.rows, cols = bgra.cols;
  std::uint8_t* dst = bgra.data;
  for (int y = 0; y < rows; ++y) {
    const std::uint8_t* src = bgra.ptr<std::uint8_t>(y);
    for (int x = 0; x < cols; ++x, src += 4, dst += 3) {
      const std::uint8_t b = src[0], g = src[1], r = src[2];
      dst[0] = r;
      dst[1] = g;
      dst[2] = b;
    }
  }
  // A view of the packed front, sharing (and keeping alive) the decoded buffer.
  return cv::Mat(bgra.reshape(1, 1)).colRange(0, rows * cols * 3).reshape(3, rows);
}

// PNG, BMP and WEBP: any depth, 1 to 4 channels. Nothing else reaches OpenCV, whose
// other readers (TIFF, DICOM, JPEG 2000, GDAL's...) skip the pixel limit or abort the
// process on hostile bytes.
cv::Mat decode_other(const std::uint8_t* data, std::size_t size, const DecodeOptions& options,
                     const std::string& source) {
  const char* format = format_name(data, size);
  if (!format) throw FormatError(source + ": not an image (not JPEG, PNG, BMP or WEBP data)");
  if (size > static_cast<std::size_t>(INT_MAX)) {
    throw FormatError(source + ": image data too large (" + std::to_string(size) + " bytes)");
  }
#ifdef TLCORE_HAVE_IMGCODECS
  check_webp_header(data, size, format, source);
  const cv::Mat encoded(1, static_cast<int>(size), CV_8UC1, const_cast<std::uint8_t*>(data));
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    throw FormatError(source + ": cannot decode " + format + " (" + e.what() + ")");
  }
#else
  throw Unsupported(source + ": " + format +
                    " data, but this tlcore was built without OpenCV imgcodecs (JPEG only)");
#endif
  if (decoded.empty()) throw FormatError(source + ": truncated or corrupt " + format + " data");

  if (decoded.depth() == CV_16U) {
    cv::Mat eight;
    // 65535 -> 255 exactly; a plain shift would turn 0x00FF into 0.
    decoded.convertTo(eight, CV_8U, 1.0 / 257.0);
    decoded = eight;
  } else if (decoded.depth() != CV_8U) {
    throw FormatError(source + ": unsupported sample depth (only 8- and 16-bit images)");
  }

  decoded = reduced(decoded, options.min_side);
  const bool gray_out = options.channels == 1;
  cv::Mat out;
  switch (decoded.channels()) {
    case 1:
      if (gray_out) return decoded;
      cv::cvtColor(decoded, out, cv::COLOR_GRAY2RGB);
      return out;
    case 2:  // gray + alpha
      cv::extractChannel(decoded, out, 0);
      if (gray_out) return out;
      cv::cvtColor(out, decoded, cv::COLOR_GRAY2RGB);
      return decoded;
    case 3:
      if (gray_out) break;
      return bgr_to_rgb_in_place(decoded);
    case 4:
      if (gray_out) break;
      return bgra_to_rgb_in_place(decoded);
    default:
      throw FormatError(source + ": unsupported channel count " +
                        std::to_string(decoded.channels()));
  }
  cv::cvtColor(decoded, out, decoded.channels() == 3 ? cv::COLOR_BGR2GRAY : cv::COLOR_BGRA2GRAY);
  return out;
}

}  // namespace

std::pair<std::int64_t, std::int64_t> image_dimensions(const std::uint8_t* data, std::size_t size) {
  if (is_jpeg(data, size)) {
    int width = 0, height = 0, subsampling = 0, colorspace = 0;
    if (tjDecompressHeader3(decompressor(), data, static_cast<unsigned long>(size), &width, &height,
                            &subsampling, &colorspace) != 0) {
      discard_decompressor();
      return {0, 0};
    }
    return {width, height};
  }
  if (starts_with(data, size, "\x89PNG\r\n\x1A\n", 8) && size >= 24)
    return {big_endian32(data + 16), big_endian32(data + 20)};
  if (starts_with(data, size, "BM", 2) && size >= 26) {
    // A negative height means top-down rows; a negative width is invalid, but its
    // size still counts for the bomb check.
    const std::int64_t width = static_cast<std::int32_t>(little_endian(data + 18, 4));
    const std::int64_t height = static_cast<std::int32_t>(little_endian(data + 22, 4));
    return {std::abs(width), std::abs(height)};
  }
  if (starts_with(data, size, "RIFF", 4) && starts_with(data, size, "WEBP", 4, 8)) {
    if (starts_with(data, size, "VP8 ", 4, 12) && size >= 30)
      return {little_endian(data + 26, 2) & 0x3FFF, little_endian(data + 28, 2) & 0x3FFF};
    if (starts_with(data, size, "VP8L", 4, 12) && size >= 25) {
      const std::uint32_t bits = little_endian(data + 21, 4);
      return {(bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1};
    }
    if (starts_with(data, size, "VP8X", 4, 12) && size >= 30)
      return {little_endian(data + 24, 3) + 1, little_endian(data + 27, 3) + 1};
  }
  return {0, 0};
}

cv::Mat decode_image(const std::uint8_t* data, std::size_t size, const DecodeOptions& options,
                     const std::string& source) {
  internal::check_options(options);
  if (size == 0 || data == nullptr) throw FormatError(source + ": empty image data (0 bytes)");
  check_pixels(data, size, options, source);
  if (is_jpeg(data, size)) return decode_jpeg(data, size, options, source);
  return decode_other(data, size, options, source);
}

cv::Mat read_image(const std::string& path, const DecodeOptions& options) {
  const std::vector<std::uint8_t> bytes = internal::read_file(path);
  return decode_image(bytes.data(), bytes.size(), options, path);
}

std::string image_extension(const std::uint8_t* data, std::size_t size) {
  if (is_jpeg(data, size)) return "jpg";
  std::string name = format_name(data, size) ? format_name(data, size) : "";
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

bool has_image_extension(const std::string& name) {
  const std::size_t dot = name.find_last_of('.');
  if (dot == std::string::npos || name.find('/', dot) != std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp" || ext == "webp";
}

}  // namespace tlcore
