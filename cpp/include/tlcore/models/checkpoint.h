// State dicts on disk: torch.save files (zip format, and the legacy format of
// torch < 1.6) read without Python, and tlcore's own files, which torch.load reads.
#pragma once

#include <string>
#include <vector>

#include "tlcore/models/model.h"

namespace tlcore::models {

// Reads name -> tensor from a file written by torch.save(model.state_dict(), path)
// or save_state_dict. A training checkpoint whose "state_dict" or "model" entry
// holds the tensors also works. NotFound for a missing file, FormatError for one
// that is not such a checkpoint, InvalidArgument for a TorchScript archive.
StateDict read_state_dict(const std::string& path);

// Writes a zip-format file that read_state_dict and Python's torch.load read.
// The file appears complete or not at all (written beside it, then renamed).
void save_state_dict(const StateDict& state, const std::string& path);

struct LoadOptions {
  // Missing and unexpected entries are errors; a shape mismatch always is.
  TORCH_ARG(bool, strict) = true;
  // When the checkpoint's classifier does not fit the model's head (another class
  // count or head kind), skip it and keep the head's own initialisation.
  TORCH_ARG(bool, drop_head) = false;
};

// Copies `state` into the model. Throws InvalidArgument naming `source` and
// listing the missing, unexpected and mismatched entries. Returns the checkpoint
// entries dropped as the head (empty when the head was loaded).
std::vector<std::string> load_state_dict(ModelImpl& model, const StateDict& state,
                                         const LoadOptions& options = {},
                                         const std::string& source = "state dict");

// read_state_dict + load_state_dict.
std::vector<std::string> load_checkpoint(ModelImpl& model, const std::string& path,
                                         const LoadOptions& options = {});

}  // namespace tlcore::models
