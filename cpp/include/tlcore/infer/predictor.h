// Serving-side inference: a model with its preprocessing that answers single
// images from many threads at once, gathering concurrent requests into batches
// (dynamic batching) so that the network runs at batch speed under load.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "tlcore/augment/pipeline.h"
#include "tlcore/infer/scores.h"
#include "tlcore/models/model.h"
#include "tlcore/models/spec.h"

namespace tlcore {

struct PredictorOptions {
  // A batch runs when it holds max_batch requests or its first request has
  // waited max_delay_ms, whichever comes first.
  std::int64_t max_batch = 16;
  double max_delay_ms = 5.0;
  // Requests waiting beyond this are refused with Overloaded instead of queueing forever.
  std::int64_t max_queue = 256;
  // Encoded images claiming more pixels are refused before decoding (decompression bombs).
  std::int64_t max_pixels = 40'000'000;
  // "cpu", "cuda" or "auto" (CUDA when available).
  std::string device = "auto";
  // On the CPU: "fp32", "bf16", "int8" (a calibrated model) or "auto" (resolve_precision).
  std::string precision = "fp32";
};

struct PredictorStats {
  std::int64_t requests = 0;  // accepted
  std::int64_t rejected = 0;  // refused because the queue was full
  std::int64_t batches = 0;
  std::int64_t queue_depth = 0;
  std::map<std::int64_t, std::int64_t> batch_sizes;  // size -> batches of that size
};

// One image to answer: encoded bytes (`data`, `size`) or, when `data` is null, a
// decoded HxWxC uint8 `image`. `source` names it in errors.
struct PredictorInput {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  cv::Mat image;
  std::string source;
};

class Predictor {
 public:
  // The model is put in eval mode; it runs the spec's pipeline (which should be
  // deterministic: an eval pipeline) and scores with the spec's temperature.
  Predictor(std::shared_ptr<models::ModelImpl> model, models::ModelSpec spec,
            PredictorOptions options = {});
  ~Predictor();  // answers what is queued, then stops
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;

  // The scores of encoded image bytes or a decoded HxWxC uint8 image. Thread-safe;
  // blocks until the request's batch has run. Throws FormatError for bad images
  // (naming `source`), Overloaded when the queue is full.
  Scores predict(const std::uint8_t* data, std::size_t size, const std::string& source);
  Scores predict(const cv::Mat& image, const std::string& source);
  // Every image's scores (a row each), submitted together so that they share
  // batches. A bad image throws FormatError naming it; nothing is returned.
  Scores predict_many(const std::vector<PredictorInput>& inputs);

  PredictorStats stats() const;
  const PredictorOptions& options() const;
  const models::ModelSpec& spec() const;
  std::string device() const;
  // What the model runs in ("fp32", "bf16", "int8"), and why it is not what was asked
  // for (empty when it is).
  std::string precision() const;
  const std::string& precision_note() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tlcore
