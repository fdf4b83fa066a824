#include "tlcore/augment/pipeline.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "op_util.h"
#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {

using augment_detail::format_number;

namespace {

std::string format_tuple(const std::vector<float>& values) {
  std::string text = "(";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) text += ", ";
    text += format_number(values[i]);
  }
  return text + (values.size() == 1 ? ",)" : ")");
}

}  // namespace

Pipeline::Pipeline(std::vector<OpPtr> ops, int out_height, int out_width, std::vector<float> mean,
                   std::vector<float> std, int channels)
    : ops_(std::move(ops)),
      out_height_(out_height),
      out_width_(out_width),
      mean_(std::move(mean)),
      std_(std::move(std)),
      channels_(channels) {
  if (channels_ != 1 && channels_ != 3) {
    throw InvalidArgument("Pipeline: channels must be 1 or 3, got " + std::to_string(channels_));
  }
  if (out_height_ <= 0 || out_width_ <= 0) {
    throw InvalidArgument("Pipeline: output size must be positive, got " +
                          std::to_string(out_height_) + "x" + std::to_string(out_width_));
  }
  const auto n = static_cast<std::size_t>(channels_);
  if (mean_.size() != n || std_.size() != n) {
    throw InvalidArgument("Pipeline: mean and std need one value per channel (" +
                          std::to_string(channels_) + "), got " + std::to_string(mean_.size()) +
                          " and " + std::to_string(std_.size()));
  }
  for (std::size_t c = 0; c < n; ++c) {
    if (!std::isfinite(mean_[c]) || !(std_[c] > 0.0f) || !std::isfinite(std_[c])) {
      throw InvalidArgument("Pipeline: mean must be finite and std positive, got mean " +
                            format_tuple(mean_) + " std " + format_tuple(std_));
    }
  }
  for (const OpPtr& op : ops_) {
    if (!op) throw InvalidArgument("Pipeline: null op");
  }
}

cv::Mat Pipeline::augment(const cv::Mat& image, Rng& rng) const {
  check_image(image, [this] { return repr(); });
  cv::Mat out = image;
  for (const OpPtr& op : ops_) out = op->apply(out, rng);
  if (out.rows != out_height_ || out.cols != out_width_ || out.channels() != channels_) {
    throw InvalidArgument(
        repr() + " turned a " + std::to_string(image.rows) + "x" + std::to_string(image.cols) +
        "x" + std::to_string(image.channels()) + " input into " + std::to_string(out.rows) + "x" +
        std::to_string(out.cols) + "x" + std::to_string(out.channels()) + ", expected " +
        std::to_string(out_height_) + "x" + std::to_string(out_width_) + "x" +
        std::to_string(channels_) + ": end the ops with a resize or crop to the output size");
  }
  return out;
}

namespace {

void check_output_image(const Pipeline& pipeline, const cv::Mat& image, const char* what) {
  if (image.depth() != CV_8U || image.rows != pipeline.out_height() ||
      image.cols != pipeline.out_width() || image.channels() != pipeline.channels()) {
    throw InvalidArgument(
        std::string(what) + ": expected an 8-bit " + std::to_string(pipeline.out_height()) + "x" +
        std::to_string(pipeline.out_width()) + "x" + std::to_string(pipeline.channels()) +
        " image, got " + std::to_string(image.rows) + "x" + std::to_string(image.cols) + "x" +
        std::to_string(image.channels()) + " of depth " + std::to_string(image.depth()));
  }
}

}  // namespace

void Pipeline::normalize_into(const cv::Mat& image, float* out) const {
  check_output_image(*this, image, "Pipeline::normalize_into");
  // (x / 255 - mean) / std == x * scale + bias: one multiply-add per value.
  float scale[3];
  float bias[3];
  for (int c = 0; c < channels_; ++c) {
    scale[c] = static_cast<float>(1.0 / (255.0 * std_[c]));
    bias[c] = static_cast<float>(-static_cast<double>(mean_[c]) / std_[c]);
  }
  const std::size_t plane = static_cast<std::size_t>(out_height_) * out_width_;
  const int width = out_width_;
  for (int y = 0; y < out_height_; ++y) {
    const std::uint8_t* in = image.ptr<std::uint8_t>(y);
    float* o0 = out + static_cast<std::size_t>(y) * width;
    if (channels_ == 1) {
      const float a = scale[0];
      const float b = bias[0];
      for (int x = 0; x < width; ++x) o0[x] = in[x] * a + b;
      continue;
    }
    float* o1 = o0 + plane;
    float* o2 = o1 + plane;
    const float a0 = scale[0], a1 = scale[1], a2 = scale[2];
    const float b0 = bias[0], b1 = bias[1], b2 = bias[2];
    for (int x = 0; x < width; ++x) {
      o0[x] = in[3 * x] * a0 + b0;
      o1[x] = in[3 * x + 1] * a1 + b1;
      o2[x] = in[3 * x + 2] * a2 + b2;
    }
  }
}

void Pipeline::copy_into(const cv::Mat& image, std::uint8_t* out) const {
  check_output_image(*this, image, "Pipeline::copy_into");
  const std::size_t plane = static_cast<std::size_t>(out_height_) * out_width_;
  const int width = out_width_;
  for (int y = 0; y < out_height_; ++y) {
    const std::uint8_t* in = image.ptr<std::uint8_t>(y);
    std::uint8_t* o0 = out + static_cast<std::size_t>(y) * width;
    if (channels_ == 1) {
      std::memcpy(o0, in, static_cast<std::size_t>(width));
      continue;
    }
    std::uint8_t* o1 = o0 + plane;
    std::uint8_t* o2 = o1 + plane;
    for (int x = 0; x < width; ++x) {
      o0[x] = in[3 * x];
      o1[x] = in[3 * x + 1];
      o2[x] = in[3 * x + 2];
    }
  }
}

DecodeOptions Pipeline::decode_options() const {
  // Walk back from the output: 0 (full resolution) until an op whose output
  // does not depend on the input's scale (a resize) sets a bound.
  int side = 0;
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) side = (*it)->min_input_side(side);
  DecodeOptions options;
  options.channels = channels_;
  options.min_side = side;
  return options;
}

std::string Pipeline::repr() const {
  std::string text = "Pipeline([";
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    if (i > 0) text += ", ";
    text += ops_[i]->repr();
  }
  return text + "], size=(" + std::to_string(out_height_) + ", " + std::to_string(out_width_) +
         "), mean=" + format_tuple(mean_) + ", std=" + format_tuple(std_) +
         ", channels=" + std::to_string(channels_) + ")";
}

}  // namespace tlcore
