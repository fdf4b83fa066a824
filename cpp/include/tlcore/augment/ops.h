// The augmentation ops. As in kornia, each random op is split into a draw of
// its parameters (sample, the only place that touches the Rng) and a
// deterministic apply of those parameters, so a draw can be recorded and
// replayed exactly; the deterministic applies are also free functions.
// Every op takes and returns 8-bit HxWx1 or HxWx3 images (RGB order).
#pragma once

#include <array>
#include <string>
#include <type_traits>

#include <opencv2/core/mat.hpp>

#include "tlcore/augment/pipeline.h"
#include "tlcore/augment/rng.h"

namespace tlcore {

// A rectangle in the pixel grid of the image it is applied to. It may reach
// past the image (a centre crop larger than the image, a padded random crop);
// the part outside is filled as the op says.
struct CropBox {
  int top = 0;
  int left = 0;
  int height = 0;
  int width = 0;
};

enum class PadMode {
  kZero,     // zeros (torchvision's padding_mode="constant", fill=0)
  kReflect,  // mirror without repeating the edge (torchvision's "reflect")
};

// "zero" (or torchvision's "constant") and "reflect"; anything else is InvalidArgument.
PadMode parse_pad_mode(const std::string& name);

// Throws InvalidArgument naming `where` unless `image` is a non-empty 8-bit
// image with 1 or 3 channels.
void check_image(const cv::Mat& image, const std::string& where);
bool is_supported_image(const cv::Mat& image);
// The same check where naming the caller costs work (an op's repr() formats
// numbers): `describe` runs only when the check fails, not for every image.
template <typename Describe,
          typename = std::enable_if_t<std::is_invocable_r_v<std::string, const Describe&>>>
void check_image(const cv::Mat& image, const Describe& describe) {
  if (!is_supported_image(image)) check_image(image, describe());
}

// A reduced JPEG decode (libjpeg's DCT scaling) must leave at least this factor
// for the resize that follows, as Pillow's draft(reducing_gap=2) does. Decoding
// to just the output size and resizing 1:1 shifts the geometry by up to a pixel
// and skips PIL's filter: on the shared photos the imagenet-eval preset then
// differed from torchvision's full decode by up to 0.13 (normalised units, mean
// abs) against at most 0.02 with this gap.
constexpr int kReducingGap = 2;

// ---- Deterministic applies ----

// Resamples to height x width: when either side shrinks, resize_antialias (PIL's
// filter; cv::INTER_AREA's box filter differed from torchvision's PIL resize by up
// to 3.7 grey levels on average on real photos), otherwise cv::INTER_LINEAR (the
// same bilinear filter, vectorised; its rounding may differ by one level).
cv::Mat resize_image(const cv::Mat& image, int height, int width);
// PIL's Image.resize(size, BILINEAR) bit for bit (Pillow's Resample.c): a triangle
// filter stretched by the downscale factor, so shrinking is antialiased.
cv::Mat resize_antialias(const cv::Mat& image, int height, int width);
// torchvision's Resize(int) size: the shorter side becomes `shorter` and the
// longer int(shorter * long / short), truncated as torchvision does.
cv::Size resized_shorter_size(cv::Size input, int shorter);
// torchvision's center_crop arithmetic, padding included: top and left are
// negative when the crop is larger than the image.
CropBox center_crop_box(int height, int width, int crop_height, int crop_width);
// Copies `box` out of `image`, filling what lies outside by `mode`.
cv::Mat crop(const cv::Mat& image, const CropBox& box, PadMode mode = PadMode::kZero);
// Crops `box` (which must lie inside the image) and resizes it to height x width.
cv::Mat resized_crop(const cv::Mat& image, const CropBox& box, int height, int width);
cv::Mat hflip(const cv::Mat& image);
// Rotates counter-clockwise by `degrees` about the image centre, same size,
// bilinear, zeros where no input pixel lands.
cv::Mat rotate(const cv::Mat& image, double degrees);
// Samples the input at centre + (x - centre) * factor: factor < 1 zooms in,
// factor > 1 zooms out (zeros around). Same size, bilinear.
cv::Mat zoom(const cv::Mat& image, double factor);
// torchvision's adjust_*: blend with black, with the mean grey level, with the
// grey image. Results are rounded to the nearest integer and saturated (PIL and
// torchvision's uint8 path truncate, darkening by half a level per step).
cv::Mat adjust_brightness(const cv::Mat& image, double factor);
cv::Mat adjust_contrast(const cv::Mat& image, double factor);
cv::Mat adjust_saturation(const cv::Mat& image, double factor);
// PIL's convert("L") exactly (ITU-R 601-2 luma, L = (19595 R + 38470 G + 7471 B
// + 2^15) >> 16), replicated to `channels` (1 or 3). A 1-channel input is taken as luma.
cv::Mat grayscale(const cv::Mat& image, int channels);

// ---- Ops ----

// Resize(int): shorter side to `shorter` (torchvision's Resize(int)); Resize(h, w): exact size.
class Resize final : public Op {
 public:
  explicit Resize(int shorter);
  Resize(int height, int width);

  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  cv::Mat apply(const cv::Mat& image) const;
  // kReducingGap times the output's larger side: the output does not depend on the
  // input's scale, so later ops impose nothing.
  int min_input_side(int after) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  int shorter_ = 0;  // 0: exact size
  int height_ = 0;
  int width_ = 0;
};

// torchvision's CenterCrop, zero padding when the crop is larger than the image.
class CenterCrop final : public Op {
 public:
  explicit CenterCrop(int size) : CenterCrop(size, size) {}
  CenterCrop(int height, int width);

  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  cv::Mat apply(const cv::Mat& image) const;
  // 0: a crop of fixed pixel size keeps a different part of the scene from a
  // reduced decode, so no reduction is safe before it.
  int min_input_side(int after) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  int height_;
  int width_;
};

struct ResizedCropParams {
  CropBox box;
  bool fallback = false;  // all 10 attempts failed: torchvision's central crop
};

// torchvision's RandomResizedCrop: get_params' algorithm exactly (10 attempts of
// a uniform area fraction in `scale` and a log-uniform aspect ratio in `ratio`,
// then the central fallback), then a resize of the box to height x width.
class RandomResizedCrop final : public Op {
 public:
  explicit RandomResizedCrop(int size, std::array<double, 2> scale = {0.08, 1.0},
                             std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0})
      : RandomResizedCrop(size, size, scale, ratio) {}
  RandomResizedCrop(int height, int width, std::array<double, 2> scale = {0.08, 1.0},
                    std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0});

  ResizedCropParams sample(cv::Size input, Rng& rng) const;
  cv::Mat apply(const cv::Mat& image, const ResizedCropParams& params) const;
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  // The smallest box any attempt accepts has a side of sqrt(area * scale_min *
  // min(ratio_min, 1 / ratio_max)); an input whose shorter side keeps that box
  // kReducingGap times the output size resizes every draw as from full resolution.
  int min_input_side(int after) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  int height_;
  int width_;
  std::array<double, 2> scale_;
  std::array<double, 2> ratio_;
};

// CIFAR's augmentation: pad by `padding` on every side, then torchvision's
// RandomCrop of height x width. The box is drawn in the input's pixel grid
// (top, left in [-padding, side + padding - crop]).
class PadRandomCrop final : public Op {
 public:
  PadRandomCrop(int size, int padding, PadMode mode = PadMode::kZero)
      : PadRandomCrop(size, size, padding, mode) {}
  PadRandomCrop(int height, int width, int padding, PadMode mode = PadMode::kZero);

  CropBox sample(cv::Size input, Rng& rng) const;
  cv::Mat apply(const cv::Mat& image, const CropBox& box) const;
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  int min_input_side(int after) const override;  // 0: fixed pixel sizes, as CenterCrop
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  int height_;
  int width_;
  int padding_;
  PadMode mode_;
};

class RandomHorizontalFlip final : public Op {
 public:
  explicit RandomHorizontalFlip(double p = 0.5);

  bool sample(Rng& rng) const;  // true: flip
  cv::Mat apply(const cv::Mat& image, bool flip) const;
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  double p_;
};

// Rotation by an angle uniform in [min_degrees, max_degrees] (counter-clockwise
// positive, as torchvision), about the centre, same size, zero fill, bilinear.
class RandomRotation final : public Op {
 public:
  explicit RandomRotation(double degrees) : RandomRotation(-degrees, degrees) {}
  RandomRotation(double min_degrees, double max_degrees);

  double sample(Rng& rng) const;  // the angle in degrees
  cv::Mat apply(const cv::Mat& image, double degrees) const;
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  double min_;
  double max_;
};

// Keras' zoom_range: one factor uniform in [1 - range, 1 + range] (or [lo, hi])
// for both axes, about the centre, same size (see zoom()).
class RandomZoom final : public Op {
 public:
  explicit RandomZoom(double range) : RandomZoom(1.0 - range, 1.0 + range) {}
  RandomZoom(double min_factor, double max_factor);

  double sample(Rng& rng) const;  // the zoom factor
  cv::Mat apply(const cv::Mat& image, double factor) const;
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  double min_;
  double max_;
};

struct JitterParams {
  double brightness = 1.0;
  double contrast = 1.0;
  double saturation = 1.0;
};

// torchvision's ColorJitter without hue: each factor uniform in
// [max(0, 1 - x), 1 + x] (x = 0 leaves it alone and draws nothing). Applied in a
// fixed order (brightness, contrast, saturation) rather than torchvision's
// random permutation, so one draw is three numbers a test can replay.
class ColorJitter final : public Op {
 public:
  explicit ColorJitter(double brightness = 0.0, double contrast = 0.0, double saturation = 0.0);

  JitterParams sample(Rng& rng) const;
  cv::Mat apply(const cv::Mat& image, const JitterParams& params) const;
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  double brightness_;
  double contrast_;
  double saturation_;
};

// Grey image replicated to 3 channels (torchvision's Grayscale(3)).
class Grayscale3 final : public Op {
 public:
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  cv::Mat apply(const cv::Mat& image) const;
  std::string repr() const override;
  nlohmann::json to_json() const override;
};

// torchvision's RandomGrayscale: with probability p the grey image, with the
// input's channel count.
class RandomGrayscale final : public Op {
 public:
  explicit RandomGrayscale(double p = 0.1);

  bool sample(Rng& rng) const;
  cv::Mat apply(const cv::Mat& image, bool gray) const;
  cv::Mat apply(const cv::Mat& image, Rng& rng) const override;
  std::string repr() const override;
  nlohmann::json to_json() const override;

 private:
  double p_;
};

}  // namespace tlcore
