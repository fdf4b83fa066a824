// Any TorchScript module as a custom backbone: its output is the embedding
// (a 4-D output is average-pooled), and a fresh head goes on top.
#pragma once

#include <string>

#include "tlcore/models/model.h"

namespace tlcore::models {

// Loads `path` with torch::jit::load. The embedding size is found by running
// one input_size x input_size image through the module. The backbone is one
// block, "backbone"; while it is frozen the whole module stays in eval mode.
// A module that only takes one image at a time (traced with its batch size baked
// in) is detected when loading and then run image by image.
// NotFound for a missing file, FormatError for one that is not TorchScript.
Model load_torchscript_backbone(const std::string& path, int64_t num_classes,
                                const Preprocess& preprocess = {});

}  // namespace tlcore::models
