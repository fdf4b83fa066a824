// What a saved model is, apart from its weights: the one definition of the
// model file's contents, shared by Learner.save, tlcore.load, the Predictor, the
// service, export and tlcore-predict. A model carries the exact eval pipeline it
// was evaluated with, op by op, never a preset name guessed later.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tlcore/augment/pipeline.h"
#include "tlcore/models/precision.h"
#include "tlcore/models/registry.h"

namespace tlcore::models {

// The "format" entry of a model file written now; files of format 1 still load.
inline constexpr const char* kModelFormat = "tlcore-model/2";
inline constexpr const char* kModelFormatV1 = "tlcore-model/1";

// The classifier on top of the embedding, as ModelImpl::set_head takes it.
struct HeadSpec {
  std::string kind = "linear";  // linear | dropout_linear | mlp
  double dropout = 0.2;
  std::vector<int64_t> hidden;
};

// Where a model came from, for the model card.
struct Provenance {
  std::string tlcore_version;
  std::string created;      // ISO 8601, UTC
  std::string data_source;  // the training data's name (a folder, an archive, "fashion-mnist")
  int64_t data_size = 0;    // training + validation images
};

struct ModelSpec {
  std::string arch;
  // What the backbone started from: a registered tag ("imagenet"), a weights file's
  // name, or empty for a random initialisation.
  std::string weights;
  std::vector<std::string> classes;
  HeadSpec head;
  // The architecture's own knobs (ModelOptions): channels, the baselines' input size,
  // widths and dropout.
  ModelOptions options;
  // The preprocessing of every image the model sees at inference.
  std::shared_ptr<const Pipeline> pipeline;
  // The "unknown" rule (tlcore::UnknownRule): below this calibrated top probability
  // (0: never), or below this energy of the raw logits (none: not used).
  double threshold = 0.0;
  std::optional<double> min_energy;
  // Logits are divided by it before the softmax (temperature scaling; 1: uncalibrated).
  double temperature = 1.0;
  // Set by int8 calibration (tlcore quantize); empty: the model runs in fp32 or bf16 only.
  Int8Calibration int8;
  Provenance provenance;
  // JSON text kept as it was given: the training recipe (phases and their options),
  // the per-epoch history and the evaluation metrics.
  std::string recipe = "[]";
  std::string history = "[]";
  std::string metrics = "{}";
};

// The spec as plain data (JSON types only): the "spec" entry of a model file.
nlohmann::json spec_to_json(const ModelSpec& spec);
// The inverse; FormatError naming `source` for a missing or mistyped entry.
ModelSpec spec_from_json(const nlohmann::json& json, const std::string& source);
// A format-1 file's entries (arch, classes, head, preprocess, threshold, history),
// its eval pipeline rebuilt from the preset it names with the saved mean and std.
ModelSpec spec_from_v1(const nlohmann::json& json, const std::string& source);
// The same through JSON text (for the bindings); FormatError when it does not parse.
std::string spec_to_text(const ModelSpec& spec);
ModelSpec spec_from_text(const std::string& text, const std::string& source);

// "linear", "dropout_linear" or "mlp"; InvalidArgument naming the known kinds otherwise.
HeadKind parse_head_kind(const std::string& kind);

// The architecture with the spec's head and options, freshly initialised.
Model build_model(const ModelSpec& spec);

}  // namespace tlcore::models
