#include "tlcore/augment/serialize.h"

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "tlcore/augment/normalization.h"
#include "tlcore/augment/ops.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

using nlohmann::json;
using OpFactory = std::function<OpPtr(const json&)>;
using Range = std::array<double, 2>;

Range range(const json& spec, const char* key) { return spec.at(key).get<Range>(); }

// One entry per op that Op::to_json writes; the names are the file format's.
const std::map<std::string, OpFactory>& op_factories() {
  static const std::map<std::string, OpFactory> factories{
      {"resize",
       [](const json& s) -> OpPtr {
         if (s.contains("shorter")) return std::make_shared<Resize>(s.at("shorter").get<int>());
         return std::make_shared<Resize>(s.at("height").get<int>(), s.at("width").get<int>());
       }},
      {"center_crop",
       [](const json& s) {
         return std::make_shared<CenterCrop>(s.at("height").get<int>(), s.at("width").get<int>());
       }},
      {"random_resized_crop",
       [](const json& s) {
         return std::make_shared<RandomResizedCrop>(s.at("height").get<int>(),
                                                    s.at("width").get<int>(), range(s, "scale"),
                                                    range(s, "ratio"));
       }},
      {"pad_random_crop",
       [](const json& s) {
         return std::make_shared<PadRandomCrop>(
             s.at("height").get<int>(), s.at("width").get<int>(), s.at("padding").get<int>(),
             parse_pad_mode(s.at("padding_mode").get<std::string>()));
       }},
      {"random_horizontal_flip",
       [](const json& s) {
         return std::make_shared<RandomHorizontalFlip>(s.at("p").get<double>());
       }},
      {"random_rotation",
       [](const json& s) {
         const auto r = range(s, "degrees");
         return std::make_shared<RandomRotation>(r[0], r[1]);
       }},
      {"random_zoom",
       [](const json& s) {
         const auto r = range(s, "factor");
         return std::make_shared<RandomZoom>(r[0], r[1]);
       }},
      {"color_jitter",
       [](const json& s) {
         return std::make_shared<ColorJitter>(s.at("brightness").get<double>(),
                                              s.at("contrast").get<double>(),
                                              s.at("saturation").get<double>());
       }},
      {"grayscale", [](const json&) { return std::make_shared<Grayscale3>(); }},
      {"random_grayscale",
       [](const json& s) { return std::make_shared<RandomGrayscale>(s.at("p").get<double>()); }},
  };
  return factories;
}

std::string known_ops() {
  std::string names;
  for (const auto& [name, factory] : op_factories()) names += (names.empty() ? "" : ", ") + name;
  return names;
}

std::vector<float> floats(const json& values) {
  std::vector<float> out;
  for (const auto& v : values) out.push_back(static_cast<float>(v.get<double>()));
  return out;
}

}  // namespace

Normalization for_channels(const Normalization& rgb, int channels) {
  if (channels == 3) return rgb;
  // In float, as the pipelines use the statistics: grey pipelines keep the exact values
  // tlcore has always normalised them with.
  auto average = [](const std::vector<double>& v) {
    float sum = 0;
    for (double x : v) sum += static_cast<float>(x);
    return std::vector<double>{sum / static_cast<float>(v.size())};
  };
  return {average(rgb.mean), average(rgb.std)};
}

json pipeline_to_json(const Pipeline& pipeline) {
  json ops = json::array();
  for (const auto& op : pipeline.ops()) ops.push_back(op->to_json());
  // Floats widen to doubles exactly, so the round trip is bit for bit.
  std::vector<double> mean(pipeline.mean().begin(), pipeline.mean().end());
  std::vector<double> std(pipeline.std().begin(), pipeline.std().end());
  return {{"ops", ops},
          {"height", pipeline.out_height()},
          {"width", pipeline.out_width()},
          {"mean", mean},
          {"std", std},
          {"channels", pipeline.channels()}};
}

OpPtr op_from_json(const json& spec, const std::string& source) {
  std::string name;
  try {
    name = spec.at("op").get<std::string>();
  } catch (const json::exception&) {
    throw FormatError(source + ": a preprocessing op without its name: " + spec.dump());
  }
  const auto it = op_factories().find(name);
  if (it == op_factories().end())
    throw FormatError(source + ": unknown preprocessing op '" + name + "' (known: " + known_ops() +
                      "); was the file written by a newer tlcore?");
  try {
    return it->second(spec);
  } catch (const json::exception& e) {
    throw FormatError(source + ": preprocessing op " + spec.dump() + ": " + e.what());
  } catch (const InvalidArgument& e) {
    throw FormatError(source + ": preprocessing op " + spec.dump() + ": " + e.what());
  }
}

Pipeline pipeline_from_json(const json& spec, const std::string& source) {
  try {
    std::vector<OpPtr> ops;
    for (const auto& op : spec.at("ops")) ops.push_back(op_from_json(op, source));
    return Pipeline(std::move(ops), spec.at("height").get<int>(), spec.at("width").get<int>(),
                    floats(spec.at("mean")), floats(spec.at("std")),
                    spec.at("channels").get<int>());
  } catch (const json::exception& e) {
    throw FormatError(source + ": preprocessing " + spec.dump() + ": " + e.what());
  } catch (const FormatError&) {
    throw;
  } catch (const InvalidArgument& e) {
    throw FormatError(source + ": preprocessing: " + e.what());
  }
}

Pipeline pipeline_from_text(const std::string& text, const std::string& source) {
  json spec;
  try {
    spec = json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(source + ": preprocessing is not JSON: " + e.what());
  }
  return pipeline_from_json(spec, source);
}

}  // namespace tlcore
