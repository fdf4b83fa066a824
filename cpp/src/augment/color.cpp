// Colour ops: torchvision's brightness/contrast/saturation blends on PIL's
// luma. The blends are OpenCV's vectorised convertTo/addWeighted (float
// arithmetic, rounded and saturated).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "op_util.h"
#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {

using augment_detail::format_number;
using augment_detail::require_probability;

namespace {

// PIL's rgb2l: 16-bit fixed-point ITU-R 601-2 weights (they sum to 2^16), rounded.
inline std::uint8_t luma(const std::uint8_t* rgb) {
  return static_cast<std::uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >>
                                   16);
}

cv::Mat luma_plane(const cv::Mat& image) {
  if (image.channels() == 1) return image;
  cv::Mat gray(image.size(), CV_8UC1);
  for (int y = 0; y < image.rows; ++y) {
    const std::uint8_t* in = image.ptr<std::uint8_t>(y);
    std::uint8_t* out = gray.ptr<std::uint8_t>(y);
    for (int x = 0; x < image.cols; ++x) out[x] = luma(in + 3 * x);
  }
  return gray;
}

double mean_luma(const cv::Mat& image) {
  if (image.channels() == 1) return cv::mean(image)[0];
  std::uint64_t sum = 0;
  for (int y = 0; y < image.rows; ++y) {
    const std::uint8_t* in = image.ptr<std::uint8_t>(y);
    for (int x = 0; x < image.cols; ++x) sum += luma(in + 3 * x);
  }
  return static_cast<double>(sum) / (static_cast<double>(image.rows) * image.cols);
}

// The blends work element by element, so `out` may be `in` itself: ColorJitter
// chains them in place. Fresh buffers per image cost page faults that take
// longer than the arithmetic, hence also the per-thread grey scratch image.
void blend_brightness(const cv::Mat& in, double factor, cv::Mat& out) {
  in.convertTo(out, -1, factor, 0.0);
}

void blend_contrast(const cv::Mat& in, double factor, cv::Mat& out) {
  in.convertTo(out, -1, factor, (1.0 - factor) * mean_luma(in));
}

void blend_saturation(const cv::Mat& in, double factor, cv::Mat& out) {
  if (in.channels() == 1) {
    in.copyTo(out);
    return;
  }
  thread_local cv::Mat grey;
  grey.create(in.size(), CV_8UC3);
  for (int y = 0; y < in.rows; ++y) {
    const std::uint8_t* src = in.ptr<std::uint8_t>(y);
    std::uint8_t* dst = grey.ptr<std::uint8_t>(y);
    for (int x = 0; x < 3 * in.cols; x += 3) dst[x] = dst[x + 1] = dst[x + 2] = luma(src + x);
  }
  cv::addWeighted(in, factor, grey, 1.0 - factor, 0.0, out);
}

void require_factor(const char* op, double factor) {
  if (!(factor >= 0.0 && std::isfinite(factor))) {
    throw InvalidArgument(std::string(op) + ": factor must be >= 0, got " + format_number(factor));
  }
}

}  // namespace

cv::Mat adjust_brightness(const cv::Mat& image, double factor) {
  check_image(image, "adjust_brightness");
  require_factor("adjust_brightness", factor);
  cv::Mat out;
  blend_brightness(image, factor, out);
  return out;
}

cv::Mat adjust_contrast(const cv::Mat& image, double factor) {
  check_image(image, "adjust_contrast");
  require_factor("adjust_contrast", factor);
  cv::Mat out;
  blend_contrast(image, factor, out);
  return out;
}

cv::Mat adjust_saturation(const cv::Mat& image, double factor) {
  check_image(image, "adjust_saturation");
  require_factor("adjust_saturation", factor);
  cv::Mat out;
  blend_saturation(image, factor, out);
  return out;
}

cv::Mat grayscale(const cv::Mat& image, int channels) {
  check_image(image, "grayscale");
  if (channels != 1 && channels != 3) {
    throw InvalidArgument("grayscale: channels must be 1 or 3, got " + std::to_string(channels));
  }
  const cv::Mat gray = luma_plane(image);
  cv::Mat out;
  if (channels == 1) {
    out = gray.clone();
  } else {
    cv::cvtColor(gray, out, cv::COLOR_GRAY2RGB);
  }
  return out;
}

ColorJitter::ColorJitter(double brightness, double contrast, double saturation)
    : brightness_(brightness), contrast_(contrast), saturation_(saturation) {
  for (const double x : {brightness, contrast, saturation}) {
    if (!(x >= 0.0 && std::isfinite(x))) {
      throw InvalidArgument("ColorJitter: brightness, contrast and saturation must be >= 0, got " +
                            repr());
    }
  }
}

JitterParams ColorJitter::sample(Rng& rng) const {
  const auto draw = [&rng](double x) {
    return x > 0.0 ? rng.uniform(std::max(0.0, 1.0 - x), 1.0 + x) : 1.0;
  };
  JitterParams params;
  params.brightness = draw(brightness_);
  params.contrast = draw(contrast_);
  params.saturation = draw(saturation_);
  return params;
}

cv::Mat ColorJitter::apply(const cv::Mat& image, const JitterParams& params) const {
  check_image(image, [this] { return repr(); });
  require_factor("ColorJitter brightness", params.brightness);
  require_factor("ColorJitter contrast", params.contrast);
  require_factor("ColorJitter saturation", params.saturation);
  // The first blend that changes anything writes `out`, the others work in place.
  cv::Mat out;
  const cv::Mat* src = &image;
  const auto step = [&](void (*blend)(const cv::Mat&, double, cv::Mat&), double factor) {
    if (factor == 1.0) return;
    blend(*src, factor, out);
    src = &out;
  };
  step(blend_brightness, params.brightness);
  step(blend_contrast, params.contrast);
  step(blend_saturation, params.saturation);
  return src == &image ? image.clone() : out;
}

cv::Mat ColorJitter::apply(const cv::Mat& image, Rng& rng) const {
  return apply(image, sample(rng));
}

std::string ColorJitter::repr() const {
  return "ColorJitter(brightness=" + format_number(brightness_) +
         ", contrast=" + format_number(contrast_) + ", saturation=" + format_number(saturation_) +
         ")";
}

cv::Mat Grayscale3::apply(const cv::Mat& image) const {
  check_image(image, [this] { return repr(); });
  return grayscale(image, 3);
}

cv::Mat Grayscale3::apply(const cv::Mat& image, Rng& /*rng*/) const { return apply(image); }

std::string Grayscale3::repr() const { return "Grayscale3()"; }

RandomGrayscale::RandomGrayscale(double p) : p_(p) { require_probability("RandomGrayscale", p); }

bool RandomGrayscale::sample(Rng& rng) const { return rng.bernoulli(p_); }

cv::Mat RandomGrayscale::apply(const cv::Mat& image, bool gray) const {
  check_image(image, [this] { return repr(); });
  return gray ? grayscale(image, image.channels()) : image.clone();
}

cv::Mat RandomGrayscale::apply(const cv::Mat& image, Rng& rng) const {
  return apply(image, sample(rng));
}

std::string RandomGrayscale::repr() const { return "RandomGrayscale(p=" + format_number(p_) + ")"; }

nlohmann::json ColorJitter::to_json() const {
  return {{"op", "color_jitter"},
          {"brightness", brightness_},
          {"contrast", contrast_},
          {"saturation", saturation_}};
}

nlohmann::json Grayscale3::to_json() const { return {{"op", "grayscale"}}; }

nlohmann::json RandomGrayscale::to_json() const { return {{"op", "random_grayscale"}, {"p", p_}}; }

}  // namespace tlcore
