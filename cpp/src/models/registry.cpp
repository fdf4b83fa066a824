#include "tlcore/models/registry.h"

#include <map>
#include <mutex>

#include "tlcore/error.h"
#include "tlcore/models/baselines.h"
#include "tlcore/models/efficientnet.h"
#include "tlcore/models/mobilenet.h"
#include "tlcore/models/resnet.h"
#include "tlcore/models/vgg.h"

namespace tlcore::models {
namespace {

// The pretrained architectures have a fixed input: reject knobs they do not have.
void require_plain(const std::string& name, const ModelOptions& o) {
  if (o.in_channels() != 3 || o.input_size() != 0 || !o.widths().empty() || !o.depths().empty()) {
    throw InvalidArgument(name +
                          ": in_channels, input_size and widths apply only to simple_cnn and mlp, "
                          "depths only to simple_cnn");
  }
}

// Model's variadic constructor would take a derived pointer as constructor arguments.
template <typename Holder>
Model as_model(const Holder& holder) {
  return Model(std::shared_ptr<ModelImpl>(holder.ptr()));
}

double dropout_or(const ModelOptions& o, double fallback) {
  return o.dropout() < 0.0 ? fallback : o.dropout();
}

struct Registry {
  std::mutex mutex;
  std::map<std::string, ModelFactory> factories;

  void add(const std::string& name, ModelFactory factory) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!factories.emplace(name, std::move(factory)).second) {
      throw InvalidArgument("model '" + name + "' is already registered");
    }
  }
};

void register_builtins(Registry& r) {
  for (int64_t depth : {18, 34, 50, 101, 152}) {
    const auto name = "resnet" + std::to_string(depth);
    r.add(name, [name, depth](int64_t n, const ModelOptions& o) {
      require_plain(name, o);
      if (o.dropout() >= 0.0) throw InvalidArgument(name + ": has no dropout before its head");
      return as_model(ResNet(ResNetOptions(depth).num_classes(n)));
    });
  }
  for (int64_t depth : {11, 13, 16, 19}) {
    for (bool bn : {false, true}) {
      const auto name = "vgg" + std::to_string(depth) + (bn ? "_bn" : "");
      r.add(name, [name, depth, bn](int64_t n, const ModelOptions& o) {
        require_plain(name, o);
        return as_model(
            VGG(VGGOptions(depth).batch_norm(bn).num_classes(n).dropout(dropout_or(o, 0.5))));
      });
    }
  }
  r.add("mobilenet_v2", [](int64_t n, const ModelOptions& o) {
    require_plain("mobilenet_v2", o);
    return as_model(MobileNetV2(MobileNetV2Options().num_classes(n).dropout(dropout_or(o, 0.2))));
  });
  for (bool large : {false, true}) {
    const std::string name = large ? "mobilenet_v3_large" : "mobilenet_v3_small";
    r.add(name, [name, large](int64_t n, const ModelOptions& o) {
      require_plain(name, o);
      return as_model(
          MobileNetV3(MobileNetV3Options(large).num_classes(n).dropout(dropout_or(o, 0.2))));
    });
  }
  for (int64_t v = 0; v <= 3; ++v) {
    const auto name = "efficientnet_b" + std::to_string(v);
    r.add(name, [name, v](int64_t n, const ModelOptions& o) {
      require_plain(name, o);
      Model model = as_model(EfficientNet(EfficientNetOptions(v).num_classes(n)));
      if (o.dropout() >= 0.0) {
        model->set_head(HeadOptions(n).kind(HeadKind::kDropoutLinear).dropout(o.dropout()));
      }
      return model;
    });
  }
  r.add("simple_cnn", [](int64_t n, const ModelOptions& o) {
    SimpleCNNOptions opt;
    opt.num_classes(n).in_channels(o.in_channels()).dropout(dropout_or(o, opt.dropout()));
    if (o.input_size() > 0) opt.input_size(o.input_size());
    if (!o.widths().empty()) opt.channels(o.widths());
    opt.depths(o.depths());
    return as_model(SimpleCNN(opt));
  });
  r.add("mlp", [](int64_t n, const ModelOptions& o) {
    MLPOptions opt;
    opt.num_classes(n).in_channels(o.in_channels()).dropout(dropout_or(o, opt.dropout()));
    if (o.input_size() > 0) opt.input_size(o.input_size());
    if (!o.depths().empty()) throw InvalidArgument("mlp: has no depths (widths are its layers)");
    if (!o.widths().empty()) opt.hidden(o.widths());
    return as_model(MLP(opt));
  });
}

Registry& registry() {
  static Registry r;
  static const bool ready = (register_builtins(r), true);
  (void)ready;
  return r;
}

}  // namespace

void register_model(const std::string& name, ModelFactory factory) {
  if (name.empty()) throw InvalidArgument("register_model: the name is empty");
  if (!factory) throw InvalidArgument("register_model: the factory for '" + name + "' is empty");
  registry().add(name, std::move(factory));
}

Model create_model(const std::string& name, int64_t num_classes, const ModelOptions& options) {
  if (num_classes <= 0) {
    throw InvalidArgument(name + ": num_classes must be positive, got " +
                          std::to_string(num_classes));
  }
  ModelFactory factory;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.factories.find(name);
    if (it == r.factories.end()) {
      std::string known;
      for (const auto& kv : r.factories) known += (known.empty() ? "" : ", ") + kv.first;
      throw InvalidArgument("unknown model '" + name + "'; known models: " + known);
    }
    factory = it->second;
  }
  return factory(num_classes, options);
}

std::vector<std::string> model_names() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& kv : r.factories) names.push_back(kv.first);
  return names;
}

}  // namespace tlcore::models
