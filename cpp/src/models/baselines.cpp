#include "tlcore/models/baselines.h"

#include <sstream>

#include "layers.h"
#include "tlcore/error.h"

namespace tlcore::models {
namespace {

namespace nn = torch::nn;

Preprocess baseline_preprocess(const char* arch, int64_t in_channels, int64_t input_size) {
  if (in_channels <= 0) {
    throw InvalidArgument(std::string(arch) + ": in_channels must be positive, got " +
                          std::to_string(in_channels));
  }
  if (input_size <= 0) {
    throw InvalidArgument(std::string(arch) + ": input_size must be positive, got " +
                          std::to_string(input_size));
  }
  Preprocess pre;
  pre.input_size = input_size;
  pre.resize_size = input_size;
  pre.mean.assign(static_cast<size_t>(in_channels), 0.5);
  pre.std.assign(static_cast<size_t>(in_channels), 0.5);
  return pre;
}

std::vector<Block> indexed_blocks(const std::string& prefix, size_t n) {
  std::vector<Block> blocks;
  for (size_t i = 0; i < n; ++i) {
    const auto name = prefix + "." + std::to_string(i);
    blocks.push_back({name, {name}});
  }
  return blocks;
}

}  // namespace

SimpleCNNImpl::SimpleCNNImpl(const SimpleCNNOptions& o)
    : ModelImpl("simple_cnn", baseline_preprocess("simple_cnn", o.in_channels(), o.input_size()),
                o.in_channels()) {
  if (o.channels().empty()) throw InvalidArgument("simple_cnn: needs at least one block");
  if (!o.depths().empty() && o.depths().size() != o.channels().size()) {
    throw InvalidArgument("simple_cnn: " + std::to_string(o.depths().size()) + " depths for " +
                          std::to_string(o.channels().size()) + " blocks");
  }
  features_ = nn::Sequential();
  int64_t in = o.in_channels();
  for (size_t b = 0; b < o.channels().size(); ++b) {
    const int64_t c = o.channels()[b];
    const int64_t depth = o.depths().empty() ? 1 : o.depths()[b];
    if (c <= 0) throw InvalidArgument("simple_cnn: channel counts must be positive");
    if (depth <= 0) throw InvalidArgument("simple_cnn: depths must be positive");
    for (int64_t d = 0; d < depth; ++d) {
      features_->push_back(detail::ConvNormAct(detail::ConvNormActOptions(in, c, 3)));
      pool_after_.push_back(d == depth - 1);
      in = c;
    }
  }
  register_module("features", features_);
  init_head(indexed_blocks("features", features_->size()), "classifier", in,
            HeadOptions(o.num_classes()).kind(HeadKind::kDropoutLinear).dropout(o.dropout()));
  detail::init_weights(*this, detail::LinearInit::kDefault);
}

torch::Tensor SimpleCNNImpl::compute_embedding(const torch::Tensor& x) {
  auto y = x;
  for (size_t i = 0; i < features_->size(); ++i) {
    y = features_->ptr<detail::ConvNormActImpl>(i)->forward(y);
    // Halve while there is something to halve, so small inputs still work.
    if (pool_after_[i] && y.size(2) >= 2 && y.size(3) >= 2) y = torch::max_pool2d(y, 2, 2);
  }
  return detail::global_avg_pool(y);
}

MLPImpl::MLPImpl(const MLPOptions& o)
    : ModelImpl("mlp", baseline_preprocess("mlp", o.in_channels(), o.input_size()),
                o.in_channels()),
      input_size_(o.input_size()),
      dropout_(o.dropout()) {
  layers_ = register_module("layers", nn::ModuleList());
  int64_t in = o.in_channels() * o.input_size() * o.input_size();
  for (int64_t h : o.hidden()) {
    if (h <= 0) throw InvalidArgument("mlp: hidden sizes must be positive");
    layers_->push_back(nn::Linear(in, h));
    in = h;
  }
  init_head(indexed_blocks("layers", layers_->size()), "classifier", in,
            HeadOptions(o.num_classes()));
}

torch::Tensor MLPImpl::compute_embedding(const torch::Tensor& x) {
  if (x.size(2) != input_size_ || x.size(3) != input_size_) {
    std::ostringstream msg;
    msg << "mlp: built for " << input_size_ << " x " << input_size_ << " inputs, got shape "
        << x.sizes();
    throw InvalidArgument(msg.str());
  }
  auto y = x.flatten(1);
  for (const auto& layer : *layers_) {
    y = torch::dropout(torch::relu(layer->as<nn::Linear>()->forward(y)), dropout_, is_training());
  }
  return y;
}

}  // namespace tlcore::models
