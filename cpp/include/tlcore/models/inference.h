// The fast path for evaluation and prediction: a model traced once and handed
// to TorchScript's freezing and inference passes, so BatchNorm is folded into
// the convolutions, convolutions run in oneDNN with prepacked weights and fused
// activations, and no autograd state is kept. The same passes as Python's
// torch.jit.optimize_for_inference, applied from C++. In bf16 the frozen graph's
// weights become bf16 in channels-last order (oneDNN's bf16 kernels); in int8 it
// is quantized with a saved Int8Calibration (see quantize.h).
#pragma once

#include <memory>

#include "tlcore/models/model.h"
#include "tlcore/models/precision.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace tlcore::models {

// kFeatures: the feature map after the model's first `blocks` blocks (ModelImpl::features),
// for running a frozen prefix while the rest trains.
enum class InferenceOutput { kLogits, kEmbedding, kFeatures };

class InferenceModel {
 public:
  // Compiles a snapshot of `model` (weights are copied: compile again after training)
  // for image_size x image_size inputs; 0 means the model's preprocess().input_size.
  // The model itself is left as it was, apart from being put in eval mode.
  // A TorchScript backbone, or a graph oneDNN cannot run at this size (VGG below
  // 224 px), runs eagerly under InferenceMode instead; compiled() says which. A bf16 or
  // int8 graph that cannot run falls back to fp32; precision() says what runs.
  // kInt8 needs `int8`, calibrated at this image size (InvalidArgument otherwise).
  explicit InferenceModel(std::shared_ptr<ModelImpl> model, int64_t image_size = 0,
                          InferenceOutput output = InferenceOutput::kLogits, int64_t blocks = 0,
                          Precision precision = Precision::kFloat32, Int8Calibration int8 = {});

  // Logits (or embeddings, or features) for an N x C x image_size x image_size float
  // batch, computed without autograd: the result never requires grad.
  torch::Tensor forward(const torch::Tensor& x) const;

  int64_t image_size() const { return image_size_; }
  bool compiled() const { return compiled_ != nullptr; }
  // Images per run of the graph: a larger batch is run in chunks of this many.
  int64_t chunk() const { return chunk_; }
  Precision precision() const { return precision_; }
  InferenceOutput output() const { return output_; }

 private:
  std::shared_ptr<ModelImpl> model_;
  std::shared_ptr<torch::jit::Module> compiled_;
  int64_t image_size_;
  InferenceOutput output_;
  int64_t blocks_;
  int64_t chunk_ = 0;  // 0: the whole batch at once
  Precision precision_;
};

}  // namespace tlcore::models
