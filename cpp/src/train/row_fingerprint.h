// What cached feature rows depend on (private to train/): the frozen weights,
// the samples, the pipeline and the options that decide which rows are computed
// and how. Two fits with equal fingerprints compute equal rows, so a row file
// made by one serves the other.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "mixed_precision.h"
#include "tlcore/loader.h"
#include "tlcore/models/model.h"
#include "tlcore/train/trainer.h"

namespace tlcore::detail {

struct RowFingerprint {
  std::string name;  // what is cached (role, samples, model structure): names the file
  std::string full;  // the name and everything the values depend on: the file's header
};

RowFingerprint row_fingerprint(const models::ModelImpl& model, const Loader& loader,
                               std::int64_t epoch, std::int64_t blocks, bool flip,
                               torch::ScalarType dtype, const FitOptions& o, const Amp& amp,
                               const std::string& role);

}  // namespace tlcore::detail
