// Rotation and zoom: both resample the image through an affine map about its
// centre, keeping the size.
#include <cmath>
#include <nlohmann/json.hpp>

#include <opencv2/imgproc.hpp>

#include "op_util.h"
#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {

using augment_detail::format_number;
using augment_detail::format_pair;
using augment_detail::require_finite;

namespace {

// Pixel centres sit at integer coordinates, so the image centre is at
// ((w - 1) / 2, (h - 1) / 2); PIL and torchvision rotate about the same point.
cv::Point2d centre(const cv::Mat& image) {
  return {(image.cols - 1) / 2.0, (image.rows - 1) / 2.0};
}

}  // namespace

cv::Mat rotate(const cv::Mat& image, double degrees) {
  check_image(image, "rotate");
  require_finite("rotate", "angle", degrees);
  const cv::Mat forward = cv::getRotationMatrix2D(centre(image), degrees, 1.0);
  cv::Mat out;
  cv::warpAffine(image, out, forward, image.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                 cv::Scalar::all(0));
  return out;
}

cv::Mat zoom(const cv::Mat& image, double factor) {
  check_image(image, "zoom");
  if (!(factor > 0.0 && std::isfinite(factor))) {
    throw InvalidArgument("zoom: factor must be positive, got " + format_number(factor));
  }
  const cv::Point2d c = centre(image);
  // Output pixel x reads input c + (x - c) * factor.
  const cv::Matx23d inverse(factor, 0.0, c.x * (1.0 - factor),  //
                            0.0, factor, c.y * (1.0 - factor));
  cv::Mat out;
  cv::warpAffine(image, out, inverse, image.size(), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                 cv::BORDER_CONSTANT, cv::Scalar::all(0));
  return out;
}

RandomRotation::RandomRotation(double min_degrees, double max_degrees)
    : min_(min_degrees), max_(max_degrees) {
  require_finite("RandomRotation", "degrees", min_degrees);
  require_finite("RandomRotation", "degrees", max_degrees);
  if (min_degrees > max_degrees) {
    throw InvalidArgument("RandomRotation: degrees must satisfy min <= max, got " +
                          format_pair(min_degrees, max_degrees));
  }
}

double RandomRotation::sample(Rng& rng) const { return rng.uniform(min_, max_); }

cv::Mat RandomRotation::apply(const cv::Mat& image, double degrees) const {
  check_image(image, [this] { return repr(); });
  return rotate(image, degrees);
}

cv::Mat RandomRotation::apply(const cv::Mat& image, Rng& rng) const {
  return apply(image, sample(rng));
}

std::string RandomRotation::repr() const {
  return "RandomRotation(degrees=" + format_pair(min_, max_) + ")";
}

RandomZoom::RandomZoom(double min_factor, double max_factor) : min_(min_factor), max_(max_factor) {
  require_finite("RandomZoom", "factor", min_factor);
  require_finite("RandomZoom", "factor", max_factor);
  if (!(min_factor > 0.0 && min_factor <= max_factor)) {
    throw InvalidArgument(
        "RandomZoom: zoom factors must satisfy 0 < min <= max (a range r gives [1 - r, 1 + r], "
        "so r < 1), got " +
        format_pair(min_factor, max_factor));
  }
}

double RandomZoom::sample(Rng& rng) const { return rng.uniform(min_, max_); }

cv::Mat RandomZoom::apply(const cv::Mat& image, double factor) const {
  check_image(image, [this] { return repr(); });
  return zoom(image, factor);
}

cv::Mat RandomZoom::apply(const cv::Mat& image, Rng& rng) const {
  return apply(image, sample(rng));
}

std::string RandomZoom::repr() const {
  return "RandomZoom(factor=" + format_pair(min_, max_) + ")";
}

nlohmann::json RandomRotation::to_json() const {
  return {{"op", "random_rotation"}, {"degrees", {min_, max_}}};
}

nlohmann::json RandomZoom::to_json() const {
  return {{"op", "random_zoom"}, {"factor", {min_, max_}}};
}

}  // namespace tlcore
