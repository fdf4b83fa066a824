// Image decoding: any supported file in memory becomes an 8-bit RGB (or
// grayscale) cv::Mat, or a FormatError naming the source. Never a silent
// black or half-grey image: truncated files are errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include <opencv2/core/mat.hpp>

namespace tlcore {

struct DecodeOptions {
  // 3: RGB (HxWx3), 1: grayscale (HxWx1). Alpha is dropped, 16-bit scaled to 8-bit,
  // palette and CMYK converted.
  int channels = 3;
  // When > 0, an image may come out at 1/2, 1/4 or 1/8 scale while its shorter side
  // stays >= min_side: a JPEG by libjpeg's DCT scaling (far cheaper than decoding then
  // shrinking), other formats by a box reduction straight after decoding (as Pillow's reduce).
  int min_side = 0;
  // When > 0, images with more pixels are refused from their header, before any
  // pixel memory is allocated (a 50 kB PNG can claim 100,000 x 100,000 pixels).
  // The default is Pillow's DecompressionBombError bound (2 x 89,478,485 pixels).
  std::int64_t max_pixels = 178'956'970;
};

// Width and height read from the header of JPEG, PNG, BMP or WEBP data without
// decoding; {0, 0} for other formats or a header too short to tell.
std::pair<std::int64_t, std::int64_t> image_dimensions(const std::uint8_t* data, std::size_t size);

// Decodes `size` bytes at `data`. `source` names the origin in error messages.
cv::Mat decode_image(const std::uint8_t* data, std::size_t size, const DecodeOptions& options,
                     const std::string& source);

// Reads and decodes a file. Throws NotFound if it does not exist.
cv::Mat read_image(const std::string& path, const DecodeOptions& options = {});

// The file extension for the encoded image in `data`, told by its first bytes:
// "jpg", "png", "bmp" or "webp"; "" for anything the decoder refuses.
std::string image_extension(const std::uint8_t* data, std::size_t size);

// True for .jpg .jpeg .png .bmp .webp in any case.
bool has_image_extension(const std::string& name);

}  // namespace tlcore
