// Small things to train on in the trainer tests: an in-memory dataset whose
// classes a tiny CNN learns in a few epochs, loaders over it, and weight helpers.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "tlcore/augment/pipeline.h"
#include "tlcore/augment/rng.h"
#include "tlcore/data/dataset.h"
#include "tlcore/loader.h"
#include "tlcore/models/registry.h"

namespace tlcore::train_testing {

// Sample i is a size x size image of noise around a colour that says its class
// (class c brightens channel c), labelled (i % classes + label_shift) % classes:
// a shift of 1 gives labels that disagree with what the images show.
class ColourDataset final : public Dataset {
 public:
  ColourDataset(std::int64_t n, std::int64_t classes, int size, std::int64_t label_shift = 0)
      : n_(n), classes_(classes), size_(size), shift_(label_shift) {
    for (std::int64_t c = 0; c < classes; ++c) names_.push_back("c" + std::to_string(c));
  }
  std::int64_t size() const override { return n_; }
  std::int64_t label(std::int64_t i) const override { return (i % classes_ + shift_) % classes_; }
  const std::vector<std::string>& classes() const override { return names_; }
  cv::Mat image(std::int64_t i, const DecodeOptions&) const override {
    cv::Mat image(size_, size_, CV_8UC3);
    Rng rng(7, 0, static_cast<std::uint64_t>(i));
    const auto bright = static_cast<int>(i % classes_ % 3);
    for (int y = 0; y < size_; ++y)
      for (int x = 0; x < size_; ++x)
        for (int c = 0; c < 3; ++c)
          image.at<cv::Vec3b>(y, x)[c] =
              static_cast<std::uint8_t>((c == bright ? 150 : 60) + rng.uniform(0, 80));
    return image;
  }
  std::string source(std::int64_t i) const override { return "colour#" + std::to_string(i); }

 private:
  std::int64_t n_, classes_;
  int size_;
  std::int64_t shift_;
  std::vector<std::string> names_;
};

// Deterministic (no random ops): what the feature cache needs to equal the slow path.
inline PipelinePtr plain_pipeline(int size) {
  return std::make_shared<Pipeline>(std::vector<OpPtr>{}, size, size,
                                    std::vector<float>{0.5f, 0.5f, 0.5f},
                                    std::vector<float>{0.25f, 0.25f, 0.25f});
}

inline std::shared_ptr<Loader> make_loader(DatasetPtr data, int size, bool shuffle,
                                           std::int64_t batch_size = 8) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = shuffle;
  o.seed = 3;
  o.num_workers = 1;
  return std::make_shared<Loader>(std::move(data), plain_pipeline(size), o);
}

// A simple_cnn for 8 x 8 images with two small blocks, its weights drawn from `seed`.
inline models::Model tiny_cnn(std::int64_t classes, std::uint64_t seed) {
  torch::manual_seed(seed);
  return models::create_model("simple_cnn", classes,
                              models::ModelOptions().input_size(8).widths({4, 8}));
}

// Every parameter and buffer, cloned.
inline std::vector<torch::Tensor> weights_of(const models::ModelImpl& model) {
  std::vector<torch::Tensor> out;
  for (const auto& [name, t] : model.state_dict()) out.push_back(t.detach().clone());
  return out;
}

// The largest absolute difference between two sets of weights of one model.
inline double max_difference(const std::vector<torch::Tensor>& a,
                             const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double most = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    most = std::max(most,
                    (a[i].to(torch::kDouble) - b[i].to(torch::kDouble)).abs().max().item<double>());
  return most;
}

}  // namespace tlcore::train_testing
