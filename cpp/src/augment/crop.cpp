#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include <opencv2/core.hpp>

#include "op_util.h"
#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {

using augment_detail::require_non_negative;
using augment_detail::require_positive;

namespace {

std::string size_text(int height, int width) {
  return std::to_string(height) + "x" + std::to_string(width);
}

}  // namespace

PadMode parse_pad_mode(const std::string& name) {
  if (name == "zero" || name == "constant") return PadMode::kZero;
  if (name == "reflect") return PadMode::kReflect;
  throw InvalidArgument("unknown padding mode \"" + name +
                        "\"; known modes: zero (or constant), reflect");
}

CropBox center_crop_box(int height, int width, int crop_height, int crop_width) {
  require_positive("center_crop", "crop height", crop_height);
  require_positive("center_crop", "crop width", crop_width);
  // torchvision pads (left/top getting the smaller half) only the sides the crop
  // exceeds, then crops the padded image at int(round((padded - crop) / 2.0)),
  // Python's round: halves go to the even neighbour, as std::nearbyint does.
  const int pad_top = crop_height > height ? (crop_height - height) / 2 : 0;
  const int pad_left = crop_width > width ? (crop_width - width) / 2 : 0;
  const int padded_height = std::max(height, crop_height);
  const int padded_width = std::max(width, crop_width);
  CropBox box;
  box.top = static_cast<int>(std::nearbyint((padded_height - crop_height) / 2.0)) - pad_top;
  box.left = static_cast<int>(std::nearbyint((padded_width - crop_width) / 2.0)) - pad_left;
  box.height = crop_height;
  box.width = crop_width;
  return box;
}

cv::Mat crop(const cv::Mat& image, const CropBox& box, PadMode mode) {
  check_image(image, "crop");
  require_positive("crop", "box height", box.height);
  require_positive("crop", "box width", box.width);
  const cv::Rect wanted(box.left, box.top, box.width, box.height);
  const cv::Rect inside = wanted & cv::Rect(0, 0, image.cols, image.rows);
  if (inside == wanted) return image(wanted).clone();

  if (mode == PadMode::kZero) {
    cv::Mat out = cv::Mat::zeros(box.height, box.width, image.type());
    if (!inside.empty()) {
      image(inside).copyTo(out(inside - wanted.tl()));
    }
    return out;
  }
  const int top = std::max(0, -box.top);
  const int bottom = std::max(0, box.top + box.height - image.rows);
  const int left = std::max(0, -box.left);
  const int right = std::max(0, box.left + box.width - image.cols);
  // As torchvision's reflect padding: one mirror image, never a mirror of a mirror.
  if (std::max(top, bottom) >= image.rows || std::max(left, right) >= image.cols) {
    throw InvalidArgument("crop: reflect padding of a " + size_text(image.rows, image.cols) +
                          " image must be smaller than the image, needs " +
                          std::to_string(std::max(top, bottom)) + " rows and " +
                          std::to_string(std::max(left, right)) + " columns");
  }
  cv::Mat padded;
  cv::copyMakeBorder(image, padded, top, bottom, left, right, cv::BORDER_REFLECT_101);
  return padded(cv::Rect(box.left + left, box.top + top, box.width, box.height)).clone();
}

CenterCrop::CenterCrop(int height, int width) : height_(height), width_(width) {
  require_positive("CenterCrop", "height", height);
  require_positive("CenterCrop", "width", width);
}

cv::Mat CenterCrop::apply(const cv::Mat& image) const {
  check_image(image, [this] { return repr(); });
  return crop(image, center_crop_box(image.rows, image.cols, height_, width_), PadMode::kZero);
}

cv::Mat CenterCrop::apply(const cv::Mat& image, Rng& /*rng*/) const { return apply(image); }

int CenterCrop::min_input_side(int /*after*/) const { return 0; }

std::string CenterCrop::repr() const {
  return "CenterCrop((" + std::to_string(height_) + ", " + std::to_string(width_) + "))";
}

PadRandomCrop::PadRandomCrop(int height, int width, int padding, PadMode mode)
    : height_(height), width_(width), padding_(padding), mode_(mode) {
  require_positive("PadRandomCrop", "height", height);
  require_positive("PadRandomCrop", "width", width);
  require_non_negative("PadRandomCrop", "padding", padding);
}

CropBox PadRandomCrop::sample(cv::Size input, Rng& rng) const {
  const int padded_height = input.height + 2 * padding_;
  const int padded_width = input.width + 2 * padding_;
  if (padded_height < height_ || padded_width < width_) {
    throw InvalidArgument(repr() + ": a " + size_text(input.height, input.width) +
                          " input padded to " + size_text(padded_height, padded_width) +
                          " is smaller than the crop");
  }
  // torchvision's RandomCrop.get_params on the padded image: top first, then left.
  CropBox box;
  box.top = static_cast<int>(rng.integer(0, padded_height - height_)) - padding_;
  box.left = static_cast<int>(rng.integer(0, padded_width - width_)) - padding_;
  box.height = height_;
  box.width = width_;
  return box;
}

cv::Mat PadRandomCrop::apply(const cv::Mat& image, const CropBox& box) const {
  check_image(image, [this] { return repr(); });
  if (mode_ == PadMode::kReflect && padding_ >= std::min(image.rows, image.cols)) {
    throw InvalidArgument(repr() +
                          ": reflect padding needs an input larger than the padding, got " +
                          size_text(image.rows, image.cols));
  }
  return crop(image, box, mode_);
}

cv::Mat PadRandomCrop::apply(const cv::Mat& image, Rng& rng) const {
  check_image(image, [this] { return repr(); });
  return apply(image, sample(image.size(), rng));
}

int PadRandomCrop::min_input_side(int /*after*/) const { return 0; }

std::string PadRandomCrop::repr() const {
  return "PadRandomCrop(size=(" + std::to_string(height_) + ", " + std::to_string(width_) +
         "), padding=" + std::to_string(padding_) +
         ", mode=" + (mode_ == PadMode::kZero ? "'zero'" : "'reflect'") + ")";
}

nlohmann::json CenterCrop::to_json() const {
  return {{"op", "center_crop"}, {"height", height_}, {"width", width_}};
}

nlohmann::json PadRandomCrop::to_json() const {
  return {{"op", "pad_random_crop"},
          {"height", height_},
          {"width", width_},
          {"padding", padding_},
          {"padding_mode", mode_ == PadMode::kZero ? "zero" : "reflect"}};
}

}  // namespace tlcore
