// The common face of every tlcore model: a backbone that maps images to a pooled
// embedding, a replaceable classifier head, torchvision's parameter names (so
// official checkpoints load strictly), and freezing by blocks.
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tlcore/augment/normalization.h"

namespace tlcore::models {

// How images are prepared for a model's pretrained weights (torchvision's
// ImageClassification preset): resize the short side, centre-crop, normalise.
struct Preprocess {
  int64_t input_size = 224;
  int64_t resize_size = 256;
  std::vector<double> mean = imagenet_normalization().mean;
  std::vector<double> std = imagenet_normalization().std;
  std::string interpolation = "bilinear";
};

// A stage that freezes as one unit, named by the parameter-name prefixes it covers.
struct Block {
  std::string name;
  std::vector<std::string> prefixes;
};

enum class HeadKind { kLinear, kDropoutLinear, kMlp };

// The classifier put on top of the embedding.
struct HeadOptions {
  explicit HeadOptions(int64_t num_classes) : num_classes_(num_classes) {}
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(HeadKind, kind) = HeadKind::kLinear;
  // Used by kDropoutLinear and between the hidden layers of kMlp.
  TORCH_ARG(double, dropout) = 0.2;
  // Hidden sizes of kMlp, e.g. {256, 128}.
  TORCH_ARG(std::vector<int64_t>, hidden) = {};
};

// Sums a tensor in place over every rank of a data-parallel run (all-reduce).
using AllReduceSum = std::function<void(torch::Tensor&)>;

// Parameters and buffers by name, in PyTorch's state_dict order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

class ModelImpl : public torch::nn::Module {
 public:
  // Logits: head(embed(x)).
  torch::Tensor forward(const torch::Tensor& x);
  // The input of the head, N x embedding_dim(). x is N x C x H x W.
  torch::Tensor embed(const torch::Tensor& x);
  // The head alone: logits from embeddings (e.g. cached ones while the backbone is frozen).
  torch::Tensor classify(const torch::Tensor& embedding);

  // The backbone cut after its first k blocks, k <= splittable_blocks():
  // embed_from(features(x, k), k) equals embed(x). The trainer runs a frozen prefix
  // this way as a compiled inference graph and only the tail under autograd.
  torch::Tensor features(const torch::Tensor& x, int64_t k);
  torch::Tensor embed_from(const torch::Tensor& features, int64_t k);
  // How many leading blocks can run apart from the rest; 0 when the family cannot be cut.
  virtual int64_t splittable_blocks() const { return 0; }

  const std::string& arch() const { return arch_; }
  // Channels the input must have; 0 when the model does not say (TorchScript).
  int64_t in_channels() const { return in_channels_; }
  int64_t embedding_dim() const { return embedding_dim_; }
  int64_t num_classes() const { return num_classes_; }
  const Preprocess& preprocess() const { return preprocess_; }
  // Ordered from the input to the head; the head itself is not a block.
  const std::vector<Block>& blocks() const { return blocks_; }
  // Where the head sits in the parameter names ("fc", "classifier", "classifier.6").
  const std::string& head_name() const { return head_name_; }

  // Replaces the classifier; the new head is freshly initialised and trainable.
  void set_head(const HeadOptions& options);

  // Freezing keeps the head trainable. Frozen blocks get requires_grad=false and
  // their BatchNorm layers stay in eval mode (running statistics untouched) even
  // after train() is called.
  void freeze_backbone();
  // The last k blocks become trainable, every other block frozen.
  void unfreeze_last(int64_t k);
  void unfreeze_all();
  bool is_frozen(const std::string& block_name) const;
  // Keras' fine-tuning rule: every BatchNorm layer, frozen or not, normalises with its
  // running statistics and leaves them untouched (its scale and shift still train), so
  // small fine-tuning batches cannot wreck pretrained statistics.
  void set_batchnorm_eval(bool on);
  bool batchnorm_eval() const { return batchnorm_eval_; }
  // torch.nn.SyncBatchNorm: with `sum` set, BatchNorm layers in training mode normalise
  // with the mean and variance of all ranks' batches together, and gradients flow
  // through those statistics to every rank; an empty `sum` restores per-rank batches.
  // Returns the number of BatchNorm layers that now synchronise.
  int64_t sync_batchnorm(const AllReduceSum& sum);

  int64_t parameter_count() const;
  int64_t trainable_parameter_count() const;

  void train(bool on = true) override;

  StateDict state_dict() const;

 protected:
  ModelImpl(std::string arch, Preprocess preprocess, int64_t in_channels = 3)
      : arch_(std::move(arch)), preprocess_(std::move(preprocess)), in_channels_(in_channels) {}
  // The family's backbone, called by embed() once the input shape is checked.
  virtual torch::Tensor compute_embedding(const torch::Tensor& x) = 0;
  // Blocks [0, k) of the backbone, and the rest up to the embedding; families with
  // splittable_blocks() > 0 override both.
  virtual torch::Tensor run_prefix(const torch::Tensor& x, int64_t k);
  virtual torch::Tensor run_suffix(const torch::Tensor& features, int64_t k);
  // Called at the end of a family's constructor, once its modules are registered.
  // The head's parent (the model itself, or e.g. VGG's classifier) must be a
  // plain module, not a Sequential, so that the head can be swapped by name.
  void init_head(std::vector<Block> blocks, std::string head_name, int64_t embedding_dim,
                 const HeadOptions& head);

 private:
  void apply_freezing();
  void check_split(int64_t k) const;
  // -1 when `name` is in no block.
  int64_t block_of(const std::string& name) const;
  bool in_head(const std::string& name) const;

  std::string arch_;
  Preprocess preprocess_;
  int64_t in_channels_;
  std::vector<Block> blocks_;
  std::vector<bool> frozen_;
  bool batchnorm_eval_ = false;
  std::string head_name_;
  int64_t embedding_dim_ = 0;
  int64_t num_classes_ = 0;
  torch::nn::AnyModule head_;
};
TORCH_MODULE(Model);

// True when `name` equals `prefix` or lies under it ("layer1.0.conv1.weight" is under "layer1").
bool has_prefix(const std::string& name, const std::string& prefix);

}  // namespace tlcore::models
