// Pipelines as plain data, op by op: what a saved model records of the
// preprocessing it was evaluated with, rebuilt exactly when the model is loaded
// (every op, every parameter, the output size, mean and std).
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

#include "tlcore/augment/pipeline.h"

namespace tlcore {

// {"ops": [{"op": "resize", "shorter": 256}, ...], "height": 224, "width": 224,
//  "mean": [...], "std": [...], "channels": 3}
nlohmann::json pipeline_to_json(const Pipeline& pipeline);

// The inverse of pipeline_to_json and Op::to_json. FormatError naming `source`
// for an unknown op, a missing or mistyped parameter, or a value an op refuses.
Pipeline pipeline_from_json(const nlohmann::json& spec, const std::string& source);
OpPtr op_from_json(const nlohmann::json& spec, const std::string& source);

// pipeline_from_json of JSON text; FormatError naming `source` when it does not parse.
Pipeline pipeline_from_text(const std::string& text, const std::string& source);

}  // namespace tlcore
