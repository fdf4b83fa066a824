// An augmentation pipeline: uint8 image ops, each split into a seeded
// parameter draw and a deterministic apply, then one pass that normalises
// into float32 CHW (or copies uint8 CHW for normalising later on a GPU).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <opencv2/core/mat.hpp>

#include "tlcore/augment/rng.h"
#include "tlcore/data/decode.h"

namespace tlcore {

// One step on an 8-bit HxWxC image.
class Op {
 public:
  virtual ~Op() = default;
  virtual cv::Mat apply(const cv::Mat& image, Rng& rng) const = 0;
  // Smallest shorter side of the input that keeps this op lossless, given the
  // smallest side that later ops need (`after`); used to pick a reduced JPEG decode.
  // Returning 0 means "full resolution" (no reduction allowed).
  virtual int min_input_side(int after) const { return after; }
  virtual std::string repr() const = 0;
  // The op as plain data, {"op": name, parameters...}: what a saved model records of its
  // preprocessing, and what op_from_json (augment/serialize.h) rebuilds exactly.
  virtual nlohmann::json to_json() const = 0;
};

using OpPtr = std::shared_ptr<const Op>;

class Pipeline {
 public:
  // `channels` is 3 (RGB) or 1; mean/std are per channel in [0, 1] units
  // (as torchvision's Normalize after ToTensor). Output size is fixed: the
  // loader requires every augmented image to be out_height x out_width.
  Pipeline(std::vector<OpPtr> ops, int out_height, int out_width, std::vector<float> mean,
           std::vector<float> std, int channels = 3);

  // "imagenet-train", "imagenet-eval", "cifar-train", "cifar-eval". `size` is the
  // output side; mean/std default to the preset's (ImageNet or CIFAR statistics).
  static Pipeline preset(const std::string& name, int size, int channels = 3);

  cv::Mat augment(const cv::Mat& image, Rng& rng) const;

  // Writes channels x out_height x out_width floats: (x / 255 - mean) / std.
  void normalize_into(const cv::Mat& image, float* out) const;
  // Writes channels x out_height x out_width bytes (no normalisation).
  void copy_into(const cv::Mat& image, std::uint8_t* out) const;

  // How to decode inputs for this pipeline: channel count and the reduced-decode bound.
  DecodeOptions decode_options() const;

  int channels() const { return channels_; }
  int out_height() const { return out_height_; }
  int out_width() const { return out_width_; }
  const std::vector<float>& mean() const { return mean_; }
  const std::vector<float>& std() const { return std_; }
  const std::vector<OpPtr>& ops() const { return ops_; }
  std::string repr() const;

 private:
  std::vector<OpPtr> ops_;
  int out_height_;
  int out_width_;
  std::vector<float> mean_;
  std::vector<float> std_;
  int channels_;
};

using PipelinePtr = std::shared_ptr<const Pipeline>;

}  // namespace tlcore
