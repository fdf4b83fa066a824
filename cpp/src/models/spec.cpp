#include "tlcore/models/spec.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "tlcore/augment/serialize.h"
#include "tlcore/error.h"

namespace tlcore::models {
namespace {

using nlohmann::json;

// JSON text entries are stored as nested data, so plain PyTorch users read them as dicts.
json parse_text(const std::string& text, const char* what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw InvalidArgument(std::string("ModelSpec.") + what + " is not JSON text: " + e.what());
  }
}

json head_json(const HeadSpec& h) {
  return {{"kind", h.kind}, {"dropout", h.dropout}, {"hidden", h.hidden}};
}

HeadSpec head_from(const json& j) {
  return {j.at("kind").get<std::string>(), j.at("dropout").get<double>(),
          j.at("hidden").get<std::vector<int64_t>>()};
}

json options_json(const ModelOptions& o) {
  return {{"in_channels", o.in_channels()},
          {"input_size", o.input_size()},
          {"widths", o.widths()},
          {"depths", o.depths()},
          {"dropout", o.dropout()}};
}

ModelOptions options_from(const json& j) {
  return ModelOptions()
      .in_channels(j.at("in_channels").get<int64_t>())
      .input_size(j.at("input_size").get<int64_t>())
      .widths(j.at("widths").get<std::vector<int64_t>>())
      // Files from before depths existed hold one-deep models.
      .depths(j.value("depths", std::vector<int64_t>{}))
      .dropout(j.at("dropout").get<double>());
}

json provenance_json(const Provenance& p) {
  return {{"tlcore_version", p.tlcore_version},
          {"created", p.created},
          {"data_source", p.data_source},
          {"data_size", p.data_size}};
}

Provenance provenance_from(const json& j) {
  return {j.value("tlcore_version", ""), j.value("created", ""), j.value("data_source", ""),
          j.value("data_size", int64_t{0})};
}

json int8_json(const Int8Calibration& c) {
  if (c.empty()) return nullptr;
  json j{{"image_size", c.image_size},
         {"scales", c.scales},
         {"zero_points", c.zero_points},
         {"agreement", c.agreement},
         {"float_first_conv", c.float_first_conv}};
  if (!c.output_offset.empty()) j["output_offset"] = c.output_offset;
  return j;
}

Int8Calibration int8_from(const json& j, const std::string& source) {
  Int8Calibration c;
  if (j.is_null()) return c;
  c.image_size = j.at("image_size").get<int64_t>();
  c.scales = j.at("scales").get<std::vector<double>>();
  c.zero_points = j.at("zero_points").get<std::vector<int64_t>>();
  c.agreement = j.value("agreement", -1.0);
  c.float_first_conv = j.value("float_first_conv", false);
  c.output_offset = j.value("output_offset", std::vector<double>{});
  for (const double v : c.output_offset)
    if (!std::isfinite(v))
      throw FormatError(source + ": int8 calibration: an output offset is not a finite number");
  if (c.scales.size() != c.zero_points.size())
    throw FormatError(source + ": int8 calibration: " + std::to_string(c.scales.size()) +
                      " scales but " + std::to_string(c.zero_points.size()) + " zero points");
  for (size_t i = 0; i < c.scales.size(); ++i)
    if (!(c.scales[i] > 0) || c.zero_points[i] < 0 || c.zero_points[i] > 255)
      throw FormatError(source + ": int8 calibration: entry " + std::to_string(i) +
                        " is out of range (scale > 0, zero point 0..255)");
  return c;
}

// Wraps a lookup so that a missing or mistyped entry names the file.
template <typename F>
auto reading(const std::string& source, F&& read) {
  try {
    return read();
  } catch (const json::exception& e) {
    throw FormatError(source + ": not a valid tlcore model spec: " + e.what());
  }
}

}  // namespace

json spec_to_json(const ModelSpec& s) {
  if (!s.pipeline) throw InvalidArgument("ModelSpec of " + s.arch + ": no pipeline");
  return {{"arch", s.arch},
          {"weights", s.weights},
          {"classes", s.classes},
          {"head", head_json(s.head)},
          {"options", options_json(s.options)},
          {"pipeline", pipeline_to_json(*s.pipeline)},
          {"threshold", s.threshold},
          {"min_energy", s.min_energy ? json(*s.min_energy) : json()},
          {"temperature", s.temperature},
          {"int8", int8_json(s.int8)},
          {"provenance", provenance_json(s.provenance)},
          {"recipe", parse_text(s.recipe, "recipe")},
          {"history", parse_text(s.history, "history")},
          {"metrics", parse_text(s.metrics, "metrics")}};
}

ModelSpec spec_from_json(const json& j, const std::string& source) {
  return reading(source, [&] {
    ModelSpec s;
    s.arch = j.at("arch").get<std::string>();
    s.weights = j.value("weights", "");
    s.classes = j.at("classes").get<std::vector<std::string>>();
    s.head = head_from(j.at("head"));
    try {
      parse_head_kind(s.head.kind);
    } catch (const InvalidArgument& e) {
      throw FormatError(source + ": " + e.what());
    }
    s.options = options_from(j.at("options"));
    s.pipeline = std::make_shared<const Pipeline>(pipeline_from_json(j.at("pipeline"), source));
    s.threshold = j.value("threshold", 0.0);
    // Absent in files written before the energy rule: they keep the threshold alone.
    if (const auto e = j.find("min_energy"); e != j.end() && !e->is_null())
      s.min_energy = e->get<double>();
    s.temperature = j.value("temperature", 1.0);
    if (!(s.temperature > 0)) throw FormatError(source + ": temperature must be positive");
    s.int8 = int8_from(j.value("int8", json()), source);
    if (!s.int8.output_offset.empty() && s.int8.output_offset.size() != s.classes.size())
      throw FormatError(source +
                        ": int8 calibration: " + std::to_string(s.int8.output_offset.size()) +
                        " output offsets for " + std::to_string(s.classes.size()) + " classes");
    s.provenance = provenance_from(j.value("provenance", json::object()));
    s.recipe = j.value("recipe", json::array()).dump();
    s.history = j.value("history", json::array()).dump();
    s.metrics = j.value("metrics", json::object()).dump();
    return s;
  });
}

ModelSpec spec_from_v1(const json& j, const std::string& source) {
  return reading(source, [&] {
    ModelSpec s;
    s.arch = j.at("arch").get<std::string>();
    s.classes = j.at("classes").get<std::vector<std::string>>();
    s.head = head_from(j.at("head"));
    s.options.in_channels(j.at("in_channels").get<int64_t>());
    // Format 1 recorded a preset name and size; the preset's ops with the saved statistics.
    const auto& pre = j.at("preprocess");
    const int size = pre.at("image_size").get<int>();
    const int channels = pre.at("channels").get<int>();
    const auto preset = Pipeline::preset(pre.at("transform").get<std::string>(), size, channels);
    s.pipeline = std::make_shared<const Pipeline>(
        preset.ops(), size, size, pre.at("mean").get<std::vector<float>>(),
        pre.at("std").get<std::vector<float>>(), channels);
    if (s.arch == "simple_cnn" || s.arch == "mlp") s.options.input_size(size);
    s.threshold = j.value("threshold", 0.0);
    s.history = j.value("history", json::array()).dump();
    return s;
  });
}

std::string spec_to_text(const ModelSpec& spec) { return spec_to_json(spec).dump(); }

ModelSpec spec_from_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(source + ": model spec is not JSON: " + e.what());
  }
  return spec_from_json(j, source);
}

HeadKind parse_head_kind(const std::string& kind) {
  if (kind == "linear") return HeadKind::kLinear;
  if (kind == "dropout_linear") return HeadKind::kDropoutLinear;
  if (kind == "mlp") return HeadKind::kMlp;
  throw InvalidArgument("head kind must be 'linear', 'dropout_linear' or 'mlp', got '" + kind +
                        "'");
}

}  // namespace tlcore::models
