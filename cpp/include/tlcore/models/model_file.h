// tlcore's model file (.tlc): a torch.save dict of strings and tensors,
// {"format": kModelFormat, "spec": spec_to_text(...), "state_dict": {name: tensor}},
// so torch.load(path, weights_only=True) reads it in plain PyTorch (whose 1.13
// weights-only unpickler refuses pickled floats: hence the spec as JSON text).
// Read here without running any pickled code.
#pragma once

#include <string>

#include "tlcore/models/model.h"
#include "tlcore/models/spec.h"

namespace tlcore::models {

struct ModelFile {
  ModelSpec spec;
  StateDict state;
};

// Reads a model file of format 2, or of format 1 (tlcore 0.1) through spec_from_v1.
// NotFound for a missing file; FormatError naming the file for anything else it
// cannot use: not a PyTorch file, not a tlcore model, a format from a newer tlcore,
// an entry of the wrong type, a pickle that asks for objects beyond plain data.
ModelFile read_model_file(const std::string& path);

struct LoadedModel {
  ModelSpec spec;
  Model model;  // in eval mode, the file's weights loaded strictly
};

LoadedModel load_model(const std::string& path);

}  // namespace tlcore::models
