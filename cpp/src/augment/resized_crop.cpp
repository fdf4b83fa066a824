#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include <opencv2/core.hpp>

#include "op_util.h"
#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {

using augment_detail::format_pair;
using augment_detail::require_positive;

cv::Mat resized_crop(const cv::Mat& image, const CropBox& box, int height, int width) {
  check_image(image, "resized_crop");
  const cv::Rect rect(box.left, box.top, box.width, box.height);
  if (box.width <= 0 || box.height <= 0 ||
      (rect & cv::Rect(0, 0, image.cols, image.rows)) != rect) {
    throw InvalidArgument("resized_crop: box (top=" + std::to_string(box.top) +
                          ", left=" + std::to_string(box.left) + ", " + std::to_string(box.height) +
                          "x" + std::to_string(box.width) + ") is not inside the " +
                          std::to_string(image.rows) + "x" + std::to_string(image.cols) + " image");
  }
  // The ROI shares the input's pixels: only the resize writes.
  return resize_image(image(rect), height, width);
}

RandomResizedCrop::RandomResizedCrop(int height, int width, std::array<double, 2> scale,
                                     std::array<double, 2> ratio)
    : height_(height), width_(width), scale_(scale), ratio_(ratio) {
  require_positive("RandomResizedCrop", "height", height);
  require_positive("RandomResizedCrop", "width", width);
  if (!(scale[0] > 0.0 && scale[0] <= scale[1] && std::isfinite(scale[1]))) {
    throw InvalidArgument("RandomResizedCrop: scale must satisfy 0 < min <= max, got " +
                          format_pair(scale[0], scale[1]));
  }
  if (!(ratio[0] > 0.0 && ratio[0] <= ratio[1] && std::isfinite(ratio[1]))) {
    throw InvalidArgument("RandomResizedCrop: ratio must satisfy 0 < min <= max, got " +
                          format_pair(ratio[0], ratio[1]));
  }
}

ResizedCropParams RandomResizedCrop::sample(cv::Size input, Rng& rng) const {
  const int height = input.height;
  const int width = input.width;
  if (height <= 0 || width <= 0) throw InvalidArgument(repr() + ": empty input");
  const double area = static_cast<double>(height) * width;
  const double log_ratio_min = std::log(ratio_[0]);
  const double log_ratio_max = std::log(ratio_[1]);
  // torchvision's get_params, step by step. Python's round() sends halves to the
  // even neighbour, as std::nearbyint does in the default rounding mode.
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale_[0], scale_[1]);
    const double aspect = std::exp(rng.uniform(log_ratio_min, log_ratio_max));
    const double w = std::nearbyint(std::sqrt(target_area * aspect));
    const double h = std::nearbyint(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      ResizedCropParams params;
      params.box.height = static_cast<int>(h);
      params.box.width = static_cast<int>(w);
      params.box.top = static_cast<int>(rng.integer(0, height - params.box.height));
      params.box.left = static_cast<int>(rng.integer(0, width - params.box.width));
      return params;
    }
  }
  // Central fallback: the whole image clipped to the nearest allowed aspect ratio.
  ResizedCropParams params;
  params.fallback = true;
  const double in_ratio = static_cast<double>(width) / height;
  int w = width;
  int h = height;
  if (in_ratio < ratio_[0]) {
    h = static_cast<int>(std::nearbyint(w / ratio_[0]));
  } else if (in_ratio > ratio_[1]) {
    w = static_cast<int>(std::nearbyint(h * ratio_[1]));
  }
  // A ratio bound of (almost) 0 or infinity can round the box to nothing; keep one pixel.
  params.box.height = std::clamp(h, 1, height);
  params.box.width = std::clamp(w, 1, width);
  params.box.top = (height - params.box.height) / 2;
  params.box.left = (width - params.box.width) / 2;
  return params;
}

cv::Mat RandomResizedCrop::apply(const cv::Mat& image, const ResizedCropParams& params) const {
  return resized_crop(image, params.box, height_, width_);
}

cv::Mat RandomResizedCrop::apply(const cv::Mat& image, Rng& rng) const {
  check_image(image, [this] { return repr(); });
  return apply(image, sample(image.size(), rng));
}

int RandomResizedCrop::min_input_side(int /*after*/) const {
  const double shrink = std::sqrt(scale_[0] * std::min(ratio_[0], 1.0 / ratio_[1]));
  const double side = std::ceil(kReducingGap * std::max(height_, width_) / shrink);
  // A tiny minimum scale asks for more than any image has: decode at full size.
  return side < static_cast<double>(std::numeric_limits<int>::max()) ? static_cast<int>(side) : 0;
}

std::string RandomResizedCrop::repr() const {
  return "RandomResizedCrop(size=(" + std::to_string(height_) + ", " + std::to_string(width_) +
         "), scale=" + format_pair(scale_[0], scale_[1]) +
         ", ratio=" + format_pair(ratio_[0], ratio_[1]) + ")";
}

nlohmann::json RandomResizedCrop::to_json() const {
  return {{"op", "random_resized_crop"},
          {"height", height_},
          {"width", width_},
          {"scale", scale_},
          {"ratio", ratio_}};
}

}  // namespace tlcore
