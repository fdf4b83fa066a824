#include "tlcore/train/fit_option_fields.h"

#include <functional>
#include <nlohmann/json.hpp>

#include "tlcore/error.h"

namespace tlcore {
namespace {

using nlohmann::json;

struct Entry {
  FitOptionField field;
  std::function<json(const FitOptions&)> get;
  std::function<void(FitOptions&, const json&)> set;
};

// `ref` names the member once; reading and writing both go through it.
template <typename T>
Entry entry(const char* name, const char* type, const char* help, T& (*ref)(FitOptions&)) {
  return {{name, type, help},
          [ref](const FitOptions& o) { return json(ref(const_cast<FitOptions&>(o))); },
          [ref](FitOptions& o, const json& value) { ref(o) = value.get<T>(); }};
}

std::vector<Entry> make_entries() {
  using O = FitOptions;
  return {
      entry<std::int64_t>("epochs", "int", "epochs of this phase",
                          [](O& o) -> std::int64_t& { return o.epochs; }),
      entry<std::string>("phase", "str", "the phase's name in the history and checkpoint",
                         [](O& o) -> std::string& { return o.phase; }),
      entry<std::string>("optimizer", "str", "adam, adamw or sgd",
                         [](O& o) -> std::string& { return o.optimizer.name; }),
      entry<double>("lr", "float", "learning rate of the head",
                    [](O& o) -> double& { return o.optimizer.lr; }),
      entry<double>("weight_decay", "float", "L2 penalty (decoupled for adamw)",
                    [](O& o) -> double& { return o.optimizer.weight_decay; }),
      entry<double>("momentum", "float", "sgd momentum",
                    [](O& o) -> double& { return o.optimizer.momentum; }),
      entry<bool>("nesterov", "bool", "sgd with Nesterov momentum",
                  [](O& o) -> bool& { return o.optimizer.nesterov; }),
      entry<double>("beta1", "float", "adam/adamw first-moment decay",
                    [](O& o) -> double& { return o.optimizer.beta1; }),
      entry<double>("beta2", "float", "adam/adamw second-moment decay",
                    [](O& o) -> double& { return o.optimizer.beta2; }),
      entry<double>("eps", "float", "adam/adamw epsilon",
                    [](O& o) -> double& { return o.optimizer.eps; }),
      entry<double>("layer_decay", "float",
                    "discriminative rates: each block back from the head trains at this "
                    "factor of the next one's rate",
                    [](O& o) -> double& { return o.optimizer.layer_decay; }),
      entry<std::string>("schedule", "str", "constant, step, cosine or onecycle",
                         [](O& o) -> std::string& { return o.schedule.name; }),
      entry<double>("warmup_epochs", "float", "linear warm-up length in epochs",
                    [](O& o) -> double& { return o.schedule.warmup_epochs; }),
      entry<double>("warmup_start", "float", "warm-up's first rate, as a fraction of lr",
                    [](O& o) -> double& { return o.schedule.warmup_start; }),
      entry<double>("step_epochs", "float", "step schedule: epochs between drops",
                    [](O& o) -> double& { return o.schedule.step_epochs; }),
      entry<double>("gamma", "float", "step schedule: factor at each drop",
                    [](O& o) -> double& { return o.schedule.gamma; }),
      entry<double>("min_factor", "float", "cosine schedule: floor as a fraction of lr",
                    [](O& o) -> double& { return o.schedule.min_factor; }),
      entry<double>("pct_start", "float", "onecycle: fraction of training spent rising",
                    [](O& o) -> double& { return o.schedule.pct_start; }),
      entry<double>("div_factor", "float", "onecycle: initial rate = lr / div_factor",
                    [](O& o) -> double& { return o.schedule.div_factor; }),
      entry<double>("final_div_factor", "float", "onecycle: final rate = initial / this",
                    [](O& o) -> double& { return o.schedule.final_div_factor; }),
      entry<double>("clip_grad_norm", "float", "clip the gradients' global norm (0: off)",
                    [](O& o) -> double& { return o.clip_grad_norm; }),
      entry<double>("label_smoothing", "float", "cross-entropy label smoothing in [0, 1)",
                    [](O& o) -> double& { return o.label_smoothing; }),
      entry<std::vector<double>>("class_weights", "floats",
                                 "one loss weight per class (empty: unweighted)",
                                 [](O& o) -> std::vector<double>& { return o.class_weights; }),
      entry<std::string>("monitor", "str",
                         "early stopping and best weights: val_accuracy, val_f1 or val_loss",
                         [](O& o) -> std::string& { return o.monitor; }),
      entry<std::int64_t>("patience", "int",
                          "stop after this many epochs without progress (0: off)",
                          [](O& o) -> std::int64_t& { return o.patience; }),
      entry<bool>("restore_best", "bool", "end with the best epoch's weights",
                  [](O& o) -> bool& { return o.restore_best; }),
      entry<bool>("cache_features", "bool",
                  "compute what the frozen part hands the trainable part once, then train on it",
                  [](O& o) -> bool& { return o.cache_features; }),
      entry<bool>("cache_flip", "bool",
                  "with cache_features: cache mirrored images too (an exact random flip)",
                  [](O& o) -> bool& { return o.cache_flip; }),
      entry<std::int64_t>("cache_shift", "int",
                          "with cache_features: move each cached training map by up to this many "
                          "cells each way, zero fill (a random translation; 0: off)",
                          [](O& o) -> std::int64_t& { return o.cache_shift; }),
      entry<std::string>("cache_dtype", "str",
                         "with cache_features: auto, float32, bfloat16 or float16 rows",
                         [](O& o) -> std::string& { return o.cache_dtype; }),
      entry<std::string>("cache_memory", "str",
                         "with cache_features: memory cap such as 4GB; above it rows go to a "
                         "memory-mapped file, reused by later fits ('': no cap)",
                         [](O& o) -> std::string& { return o.cache_memory; }),
      entry<std::string>("cache_dir", "str",
                         "with cache_memory: folder of the row files ('': the user's cache)",
                         [](O& o) -> std::string& { return o.cache_dir; }),
      entry<bool>("compile_frozen", "bool",
                  "run the frozen leading blocks as a compiled inference graph",
                  [](O& o) -> bool& { return o.compile_frozen; }),
      entry<bool>("channels_last", "bool", "NHWC memory layout for convolutions",
                  [](O& o) -> bool& { return o.channels_last; }),
      entry<std::string>("device", "str", "cpu, cuda or auto",
                         [](O& o) -> std::string& { return o.device; }),
      entry<std::string>("amp", "str", "mixed precision: off, bf16 or fp16 (CUDA)",
                         [](O& o) -> std::string& { return o.amp; }),
      entry<bool>("sync_batchnorm", "bool",
                  "distributed: BatchNorm normalises with every rank's batch statistics",
                  [](O& o) -> bool& { return o.sync_batchnorm; }),
      entry<std::uint64_t>("seed", "int", "shuffling and augmentation draws",
                           [](O& o) -> std::uint64_t& { return o.seed; }),
      entry<std::int64_t>("epoch_offset", "int", "the loader's first epoch number",
                          [](O& o) -> std::int64_t& { return o.epoch_offset; }),
      entry<std::string>("checkpoint", "str", "file written every epoch and resumed from",
                         [](O& o) -> std::string& { return o.checkpoint; }),
      entry<double>("time_limit", "float",
                    "seconds this phase may take, caching included; after each epoch, the "
                    "epochs are set to what the measured pace fits, up to epochs (0: no limit)",
                    [](O& o) -> double& { return o.time_limit; }),
  };
}

// JSON's own types, so that 1.5 never truncates into an int field nor 1 becomes true.
bool fits(const std::string& type, const json& value) {
  if (type == "int") return value.is_number_integer();
  if (type == "float") return value.is_number();
  if (type == "bool") return value.is_boolean();
  if (type == "str") return value.is_string();
  if (!value.is_array()) return false;
  for (const auto& v : value)
    if (!v.is_number()) return false;
  return true;
}

const std::vector<Entry>& entries() {
  static const std::vector<Entry> all = make_entries();
  return all;
}

}  // namespace

const std::vector<FitOptionField>& fit_option_fields() {
  static const std::vector<FitOptionField> fields = [] {
    std::vector<FitOptionField> out;
    for (const auto& e : entries()) out.push_back(e.field);
    return out;
  }();
  return fields;
}

json fit_options_to_json(const FitOptions& options) {
  json out = json::object();
  for (const auto& e : entries()) out[e.field.name] = e.get(options);
  return out;
}

void set_fit_options(FitOptions& options, const json& values) {
  if (!values.is_object()) throw InvalidArgument("training options must be a name -> value map");
  for (const auto& [name, value] : values.items()) {
    const Entry* found = nullptr;
    for (const auto& e : entries())
      if (e.field.name == name) found = &e;
    if (found == nullptr) {
      std::string known;
      for (const auto& e : entries()) known += (known.empty() ? "" : ", ") + e.field.name;
      throw InvalidArgument("unknown training option '" + name + "' (known: " + known + ")");
    }
    if (!fits(found->field.type, value))
      throw InvalidArgument("training option '" + name + "' takes " + found->field.type + ", got " +
                            value.dump());
    found->set(options, value);
  }
}

}  // namespace tlcore
