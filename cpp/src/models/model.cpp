#include "tlcore/models/model.h"

#include <torch/torch.h>

#include <sstream>

#include "layers.h"
#include "tlcore/error.h"

namespace tlcore::models {
namespace {

torch::nn::AnyModule make_head(int64_t in_features, const HeadOptions& o) {
  if (o.num_classes() <= 0) {
    throw InvalidArgument("head: num_classes must be positive, got " +
                          std::to_string(o.num_classes()));
  }
  if (o.dropout() < 0.0 || o.dropout() >= 1.0) {
    throw InvalidArgument("head: dropout must be in [0, 1), got " + std::to_string(o.dropout()));
  }
  switch (o.kind()) {
    case HeadKind::kLinear:
      return torch::nn::AnyModule(torch::nn::Linear(in_features, o.num_classes()));
    case HeadKind::kDropoutLinear:
      return torch::nn::AnyModule(detail::Seq(torch::nn::Dropout(o.dropout()),
                                              torch::nn::Linear(in_features, o.num_classes())));
    case HeadKind::kMlp: {
      if (o.hidden().empty()) throw InvalidArgument("head: an MLP head needs hidden sizes");
      detail::Seq seq;
      int64_t in = in_features;
      for (int64_t h : o.hidden()) {
        if (h <= 0) throw InvalidArgument("head: hidden sizes must be positive");
        seq->push_back(torch::nn::Linear(in, h));
        seq->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
        seq->push_back(torch::nn::Dropout(o.dropout()));
        in = h;
      }
      seq->push_back(torch::nn::Linear(in, o.num_classes()));
      return torch::nn::AnyModule(seq);
    }
  }
  throw InvalidArgument("head: unknown head kind");
}

}  // namespace

bool has_prefix(const std::string& name, const std::string& prefix) {
  return name.size() >= prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
         (name.size() == prefix.size() || name[prefix.size()] == '.');
}

torch::Tensor ModelImpl::forward(const torch::Tensor& x) { return head_.forward(embed(x)); }

torch::Tensor ModelImpl::classify(const torch::Tensor& embedding) {
  if (!embedding.defined() || embedding.dim() != 2 || embedding.size(1) != embedding_dim_) {
    throw InvalidArgument(arch_ + ": classify expects N x " + std::to_string(embedding_dim_) +
                          " embeddings");
  }
  return head_.forward(embedding);
}

torch::Tensor ModelImpl::embed(const torch::Tensor& x) {
  if (!x.defined() || x.dim() != 4 || (in_channels_ > 0 && x.size(1) != in_channels_)) {
    std::ostringstream msg;
    msg << arch_ << ": expected an N x " << (in_channels_ > 0 ? std::to_string(in_channels_) : "C")
        << " x H x W batch, got ";
    if (x.defined()) {
      msg << "shape " << x.sizes();
    } else {
      msg << "an undefined tensor";
    }
    throw InvalidArgument(msg.str());
  }
  if (!x.is_floating_point()) {
    throw InvalidArgument(arch_ + ": expected a floating-point batch, got " +
                          std::string(c10::toString(x.scalar_type())));
  }
  return compute_embedding(x);
}

torch::Tensor ModelImpl::features(const torch::Tensor& x, int64_t k) {
  check_split(k);
  return k == 0 ? x : run_prefix(x, k);
}

torch::Tensor ModelImpl::embed_from(const torch::Tensor& features, int64_t k) {
  check_split(k);
  return k == 0 ? embed(features) : run_suffix(features, k);
}

torch::Tensor ModelImpl::run_prefix(const torch::Tensor&, int64_t) {
  throw Unsupported(arch_ + ": the backbone cannot be cut into blocks");
}

torch::Tensor ModelImpl::run_suffix(const torch::Tensor&, int64_t) {
  throw Unsupported(arch_ + ": the backbone cannot be cut into blocks");
}

void ModelImpl::check_split(int64_t k) const {
  if (k < 0 || k > splittable_blocks())
    throw InvalidArgument(arch_ + ": cannot cut after " + std::to_string(k) + " blocks (0.." +
                          std::to_string(splittable_blocks()) + " can be)");
}

void ModelImpl::init_head(std::vector<Block> blocks, std::string head_name, int64_t embedding_dim,
                          const HeadOptions& head) {
  blocks_ = std::move(blocks);
  frozen_.assign(blocks_.size(), false);
  head_name_ = std::move(head_name);
  embedding_dim_ = embedding_dim;
  set_head(head);
}

void ModelImpl::set_head(const HeadOptions& options) {
  auto head = make_head(embedding_dim_, options);
  head.ptr()->to(parameters().empty() ? torch::kCPU : parameters().front().device());
  head.ptr()->train(is_training());

  // Walk to the head's parent: the model itself or a plain module inside it.
  torch::nn::Module* parent = this;
  std::string path = head_name_;
  for (auto dot = path.find('.'); dot != std::string::npos; dot = path.find('.')) {
    // named_children() returns a copy: keep it alive while reading what find() points into
    // (the scripts/sanitize.sh run found the use after free).
    const auto children = parent->named_children();
    const auto* child = children.find(path.substr(0, dot));
    if (child == nullptr) throw Error(arch_ + ": head parent of '" + head_name_ + "' not found");
    parent = child->get();
    path = path.substr(dot + 1);
  }
  if (parent->named_children().contains(path)) {
    parent->replace_module(path, head.ptr());
  } else {
    parent->register_module(path, head.ptr());
  }
  head_ = std::move(head);
  num_classes_ = options.num_classes();
}

int64_t ModelImpl::block_of(const std::string& name) const {
  for (size_t b = 0; b < blocks_.size(); ++b) {
    for (const auto& prefix : blocks_[b].prefixes) {
      if (has_prefix(name, prefix)) return static_cast<int64_t>(b);
    }
  }
  return -1;
}

bool ModelImpl::in_head(const std::string& name) const { return has_prefix(name, head_name_); }

void ModelImpl::freeze_backbone() { unfreeze_last(0); }

void ModelImpl::unfreeze_all() { unfreeze_last(static_cast<int64_t>(blocks_.size())); }

void ModelImpl::unfreeze_last(int64_t k) {
  const auto n = static_cast<int64_t>(blocks_.size());
  if (k < 0 || k > n) {
    throw InvalidArgument(arch_ + ": unfreeze_last(" + std::to_string(k) +
                          ") needs 0 <= k <= " + std::to_string(n) + " (its number of blocks)");
  }
  for (int64_t b = 0; b < n; ++b) frozen_[b] = b < n - k;
  apply_freezing();
}

bool ModelImpl::is_frozen(const std::string& block_name) const {
  for (size_t b = 0; b < blocks_.size(); ++b) {
    if (blocks_[b].name == block_name) return frozen_[b];
  }
  throw InvalidArgument(arch_ + ": no block named '" + block_name + "'");
}

void ModelImpl::apply_freezing() {
  for (auto& p : named_parameters()) {
    const auto b = block_of(p.key());
    // Parameters outside every block and the head belong to the backbone's first stage.
    const bool frozen =
        in_head(p.key()) ? false : (b >= 0 ? frozen_[b] : !frozen_.empty() && frozen_.front());
    p.value().set_requires_grad(!frozen);
  }
  train(is_training());
}

void ModelImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (!on) return;
  for (const auto& m : named_modules("", /*include_self=*/false)) {
    if (!detail::is_batchnorm(*m.value())) continue;
    const auto b = block_of(m.key());
    if (batchnorm_eval_ || (b >= 0 && frozen_[b])) m.value()->eval();
  }
}

int64_t ModelImpl::sync_batchnorm(const AllReduceSum& sum) {
  int64_t layers = 0;
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* bn = dynamic_cast<detail::BatchNormImpl*>(m.get())) {
      bn->set_sync(sum);
      ++layers;
    }
  }
  return layers;
}

void ModelImpl::set_batchnorm_eval(bool on) {
  batchnorm_eval_ = on;
  train(is_training());
}

int64_t ModelImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

int64_t ModelImpl::trainable_parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) {
    if (p.requires_grad()) n += p.numel();
  }
  return n;
}

StateDict ModelImpl::state_dict() const {
  // PyTorch's order: each module's own parameters, then its buffers, depth first.
  StateDict out;
  for (const auto& m : named_modules()) {
    const std::string prefix = m.key().empty() ? "" : m.key() + ".";
    for (const auto& p : m.value()->named_parameters(/*recurse=*/false)) {
      out.emplace_back(prefix + p.key(), p.value());
    }
    for (const auto& b : m.value()->named_buffers(/*recurse=*/false)) {
      out.emplace_back(prefix + b.key(), b.value());
    }
  }
  return out;
}

}  // namespace tlcore::models
