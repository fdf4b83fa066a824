// Models by architecture name ("resnet50", "mobilenet_v2", "simple_cnn", ...).
// Registration is explicit and a duplicate name throws, so no entry is ever
// shadowed silently.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tlcore/models/model.h"

namespace tlcore::models {

// Options that only some architectures take; one given to an architecture that
// has no such knob is an error rather than ignored.
struct ModelOptions {
  // Baselines only: 1 for grayscale.
  TORCH_ARG(int64_t, in_channels) = 3;
  // Baselines only; 0 keeps the default (32).
  TORCH_ARG(int64_t, input_size) = 0;
  // simple_cnn: channels per block; mlp: hidden sizes. Empty keeps the default.
  TORCH_ARG(std::vector<int64_t>, widths) = {};
  // simple_cnn: convolutions per block, one entry per block. Empty: one each.
  TORCH_ARG(std::vector<int64_t>, depths) = {};
  // Dropout before the classifier; negative keeps the architecture's default.
  TORCH_ARG(double, dropout) = -1.0;
};

using ModelFactory = std::function<Model(int64_t num_classes, const ModelOptions& options)>;

// Throws InvalidArgument when `name` is already registered.
void register_model(const std::string& name, ModelFactory factory);

// Throws InvalidArgument listing the known names when `name` is unknown.
Model create_model(const std::string& name, int64_t num_classes = 1000,
                   const ModelOptions& options = {});

// Sorted.
std::vector<std::string> model_names();

}  // namespace tlcore::models
