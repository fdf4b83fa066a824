// The checkpoint a fit writes after every epoch and resumes from (private to
// train/): weights, optimizer state, the progress so far and the best weights,
// so a killed run resumed from it ends as the uninterrupted run would have.
#pragma once

#include <torch/torch.h>

#include <string>

#include "early_stopping.h"
#include "tlcore/models/model.h"
#include "tlcore/train/trainer.h"

namespace tlcore::detail {

// Writes atomically: a kill mid-write leaves the previous checkpoint intact.
void save_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, const Progress& progress);

// False, touching nothing, when `path` is empty or absent. Reads without running
// code (tlcore's pickle reader). Throws FormatError for an unreadable file or one
// holding code, InvalidArgument for another architecture's or phase's.
bool load_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, Progress& progress);

}  // namespace tlcore::detail
