// Pillow's convolution resampler (libImaging/Resample.c) for the bilinear
// filter, reproduced so tlcore's resizes equal torchvision's PIL transforms:
// the triangle filter is stretched by the downscale factor (that is PIL's
// antialiasing), weights are 22-bit fixed point, the horizontal pass runs
// first and both passes round to 8 bits, as Pillow does.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr std::int32_t kHalf = 1 << (kPrecisionBits - 1);

// Output position i reads inputs first[i] .. first[i] + count[i] - 1 with
// weights[i * taps + k].
struct Coefficients {
  int taps = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<std::int32_t> weights;
};

double triangle(double x) {
  x = std::abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// precompute_coeffs + normalize_coeffs_8bpc, step by step (C truncations included).
Coefficients coefficients(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;  // the triangle's support is 1
  Coefficients c;
  c.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<std::size_t>(out_size));
  c.count.resize(static_cast<std::size_t>(out_size));
  c.weights.assign(static_cast<std::size_t>(out_size) * c.taps, 0);
  const double inverse_scale = 1.0 / filter_scale;
  std::vector<double> k(static_cast<std::size_t>(c.taps));
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(center - support + 0.5));
    const int hi = std::min(in_size, static_cast<int>(center + support + 0.5));
    const int n = hi - lo;
    double total = 0.0;
    for (int x = 0; x < n; ++x) {
      k[static_cast<std::size_t>(x)] = triangle((x + lo - center + 0.5) * inverse_scale);
      total += k[static_cast<std::size_t>(x)];
    }
    std::int32_t* w = c.weights.data() + static_cast<std::size_t>(i) * c.taps;
    for (int x = 0; x < n; ++x) {
      const double normalised = total != 0.0 ? k[static_cast<std::size_t>(x)] / total : 0.0;
      w[x] = static_cast<std::int32_t>(normalised * (1 << kPrecisionBits) + 0.5);
    }
    c.first[static_cast<std::size_t>(i)] = lo;
    c.count[static_cast<std::size_t>(i)] = n;
  }
  return c;
}

inline std::uint8_t clip8(std::int32_t sum) {
  return static_cast<std::uint8_t>(std::clamp(sum >> kPrecisionBits, 0, 255));
}

// Rows [row0, row0 + out.rows) of `in`, resampled along x.
template <int Channels>
void horizontal(const cv::Mat& in, int row0, const Coefficients& c, cv::Mat& out) {
  for (int y = 0; y < out.rows; ++y) {
    const std::uint8_t* src = in.ptr<std::uint8_t>(row0 + y);
    std::uint8_t* dst = out.ptr<std::uint8_t>(y);
    for (int x = 0; x < out.cols; ++x) {
      const std::int32_t* w = c.weights.data() + static_cast<std::size_t>(x) * c.taps;
      const std::uint8_t* p = src + static_cast<std::size_t>(c.first[x]) * Channels;
      std::int32_t sum[Channels];
      for (int ch = 0; ch < Channels; ++ch) sum[ch] = kHalf;
      for (int k = 0; k < c.count[x]; ++k) {
        for (int ch = 0; ch < Channels; ++ch) sum[ch] += p[k * Channels + ch] * w[k];
      }
      for (int ch = 0; ch < Channels; ++ch) dst[x * Channels + ch] = clip8(sum[ch]);
    }
  }
}

// Integer sums do not depend on the order of the terms, so the vertical pass
// accumulates whole rows (vectorisable) yet gives Pillow's result exactly.
void vertical(const cv::Mat& in, int row0, const Coefficients& c, cv::Mat& out) {
  const int values = out.cols * out.channels();
  std::vector<std::int32_t> sum(static_cast<std::size_t>(values));
  for (int y = 0; y < out.rows; ++y) {
    std::fill(sum.begin(), sum.end(), kHalf);
    const std::int32_t* w = c.weights.data() + static_cast<std::size_t>(y) * c.taps;
    for (int k = 0; k < c.count[y]; ++k) {
      const std::uint8_t* src = in.ptr<std::uint8_t>(c.first[y] - row0 + k);
      const std::int32_t weight = w[k];
      for (int v = 0; v < values; ++v) sum[static_cast<std::size_t>(v)] += src[v] * weight;
    }
    std::uint8_t* dst = out.ptr<std::uint8_t>(y);
    for (int v = 0; v < values; ++v) dst[v] = clip8(sum[static_cast<std::size_t>(v)]);
  }
}

void horizontal_pass(const cv::Mat& in, int row0, const Coefficients& c, cv::Mat& out) {
  if (in.channels() == 3) {
    horizontal<3>(in, row0, c, out);
  } else {
    horizontal<1>(in, row0, c, out);
  }
}

}  // namespace

cv::Mat resize_antialias(const cv::Mat& image, int height, int width) {
  check_image(image, "resize_antialias");
  if (height <= 0 || width <= 0) {
    throw InvalidArgument("resize_antialias: size must be positive, got " + std::to_string(height) +
                          "x" + std::to_string(width));
  }
  // Pillow skips the pass along a side that keeps its length.
  const Coefficients vertical_c = coefficients(image.rows, height);
  cv::Mat out(height, width, image.type());
  if (width == image.cols) {
    vertical(image, 0, vertical_c, out);
    return out;
  }
  const Coefficients horizontal_c = coefficients(image.cols, width);
  if (height == image.rows) {
    horizontal_pass(image, 0, horizontal_c, out);
    return out;
  }
  // Only the rows the vertical pass reads. The intermediate image lives in a
  // per-thread buffer: fresh memory for every image costs page faults that take
  // longer than the filtering.
  const int row0 = vertical_c.first.front();
  const int row_count = vertical_c.first.back() + vertical_c.count.back() - row0;
  thread_local std::vector<std::uint8_t> scratch;
  scratch.resize(static_cast<std::size_t>(row_count) * width * image.channels());
  cv::Mat rows(row_count, width, image.type(), scratch.data());
  horizontal_pass(image, row0, horizontal_c, rows);
  vertical(rows, row0, vertical_c, out);
  return out;
}

}  // namespace tlcore
