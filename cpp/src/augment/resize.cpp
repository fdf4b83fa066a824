#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

#include <opencv2/imgproc.hpp>

#include "op_util.h"
#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {

using augment_detail::require_positive;

cv::Mat resize_image(const cv::Mat& image, int height, int width) {
  check_image(image, "resize");
  require_positive("resize", "height", height);
  require_positive("resize", "width", width);
  if (image.rows == height && image.cols == width) return image.clone();
  if (height < image.rows || width < image.cols) return resize_antialias(image, height, width);
  cv::Mat out;
  cv::resize(image, out, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  return out;
}

cv::Size resized_shorter_size(cv::Size input, int shorter) {
  require_positive("resize", "shorter side", shorter);
  if (input.width <= 0 || input.height <= 0) {
    throw InvalidArgument("resize: empty input " + std::to_string(input.height) + "x" +
                          std::to_string(input.width));
  }
  const bool portrait = input.width <= input.height;
  const int short_side = portrait ? input.width : input.height;
  const int long_side = portrait ? input.height : input.width;
  // Python's int(new_short * long / short): an exact product, one correctly
  // rounded division, truncation.
  const auto new_long = static_cast<int>(static_cast<double>(std::int64_t{shorter} * long_side) /
                                         static_cast<double>(short_side));
  return portrait ? cv::Size(shorter, new_long) : cv::Size(new_long, shorter);
}

Resize::Resize(int shorter) : shorter_(shorter) { require_positive("Resize", "size", shorter); }

Resize::Resize(int height, int width) : height_(height), width_(width) {
  require_positive("Resize", "height", height);
  require_positive("Resize", "width", width);
}

cv::Mat Resize::apply(const cv::Mat& image) const {
  check_image(image, [this] { return repr(); });
  if (shorter_ == 0) return resize_image(image, height_, width_);
  const cv::Size size = resized_shorter_size(image.size(), shorter_);
  return resize_image(image, size.height, size.width);
}

cv::Mat Resize::apply(const cv::Mat& image, Rng& /*rng*/) const { return apply(image); }

int Resize::min_input_side(int /*after*/) const {
  // An exact size may change the aspect ratio: a shorter side of max(h, w)
  // keeps both sides of any input at least the target.
  return kReducingGap * (shorter_ > 0 ? shorter_ : std::max(height_, width_));
}

std::string Resize::repr() const {
  if (shorter_ > 0) return "Resize(" + std::to_string(shorter_) + ")";
  return "Resize((" + std::to_string(height_) + ", " + std::to_string(width_) + "))";
}

nlohmann::json Resize::to_json() const {
  if (shorter_ > 0) return {{"op", "resize"}, {"shorter", shorter_}};
  return {{"op", "resize"}, {"height", height_}, {"width", width_}};
}

}  // namespace tlcore
