#include "op_util.h"

#include <cmath>
#include <sstream>

#include <opencv2/core.hpp>

#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {

bool is_supported_image(const cv::Mat& image) {
  return !image.empty() && image.depth() == CV_8U &&
         (image.channels() == 1 || image.channels() == 3);
}

void check_image(const cv::Mat& image, const std::string& where) {
  if (image.empty()) throw InvalidArgument(where + ": empty image");
  if (image.depth() != CV_8U || (image.channels() != 1 && image.channels() != 3)) {
    throw InvalidArgument(where + ": expected an 8-bit image with 1 or 3 channels, got depth " +
                          std::to_string(image.depth()) + " with " +
                          std::to_string(image.channels()) + " channels");
  }
}

namespace augment_detail {

std::string format_number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

std::string format_pair(double a, double b) {
  return "(" + format_number(a) + ", " + format_number(b) + ")";
}

void require_positive(const std::string& op, const std::string& what, int value) {
  if (value <= 0) {
    throw InvalidArgument(op + ": " + what + " must be positive, got " + std::to_string(value));
  }
}

void require_non_negative(const std::string& op, const std::string& what, int value) {
  if (value < 0) {
    throw InvalidArgument(op + ": " + what + " must be >= 0, got " + std::to_string(value));
  }
}

void require_probability(const std::string& op, double p) {
  if (!(p >= 0.0 && p <= 1.0)) {
    throw InvalidArgument(op + ": p must be in [0, 1], got " + format_number(p));
  }
}

void require_finite(const std::string& op, const std::string& what, double value) {
  if (!std::isfinite(value)) {
    throw InvalidArgument(op + ": " + what + " must be finite, got " + format_number(value));
  }
}

}  // namespace augment_detail
}  // namespace tlcore
