// The one list of the training options a user sets: each one's name (a keyword
// of Learner.fit, a --flag of `tlcore train`, a key of a run's config and of the
// recipe a model file records), its type, its help text and where it lives in
// FitOptions. Python and the command line are built from it, never retyped.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "tlcore/train/trainer.h"

namespace tlcore {

struct FitOptionField {
  std::string name;
  std::string type;  // "int", "float", "bool", "str" or "floats"
  std::string help;
};

// In a stable order: the phase, the optimizer, the schedule, regularisation,
// early stopping, speed, then the run's plumbing.
const std::vector<FitOptionField>& fit_option_fields();

// Every field by name, e.g. {"epochs": 5, "lr": 0.001, "optimizer": "adam", ...}.
nlohmann::json fit_options_to_json(const FitOptions& options);

// Sets the fields that `values` names, leaving the others as they are. InvalidArgument
// for an unknown name (listing the known ones) or a value of the wrong type.
void set_fit_options(FitOptions& options, const nlohmann::json& values);

}  // namespace tlcore
