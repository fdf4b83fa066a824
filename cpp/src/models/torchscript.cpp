#include "tlcore/models/torchscript.h"

#include <torch/script.h>

#include <filesystem>

#include "layers.h"
#include "tlcore/error.h"

namespace tlcore::models {
namespace {

class TorchScriptBackboneImpl : public ModelImpl {
 public:
  TorchScriptBackboneImpl(const std::string& path, int64_t num_classes, const Preprocess& pre)
      : ModelImpl("torchscript", pre, /*in_channels=*/0), path_(path) {
    if (!std::filesystem::is_regular_file(path))
      throw NotFound(path + ": no such TorchScript file");
    try {
      script_ = torch::jit::load(path, torch::kCPU);
    } catch (const c10::Error& e) {
      throw FormatError(path +
                        ": not a loadable TorchScript module: " + e.what_without_backtrace());
    }
    mirror_tensors();
    script_.eval();
    int64_t dim = 0;
    {
      torch::NoGradGuard no_grad;
      dim = compute_embedding(torch::zeros({1, 3, pre.input_size, pre.input_size})).size(1);
      // Modules traced on one image often bake the batch size in (a reshape to [1, -1]).
      try {
        per_image_ = run(torch::zeros({2, 3, pre.input_size, pre.input_size})).size(0) != 2;
      } catch (const InvalidArgument&) {
        per_image_ = true;
      }
    }
    init_head({{"backbone", {"backbone"}}}, "head", dim, HeadOptions(num_classes));
  }

  void train(bool on) override {
    ModelImpl::train(on);
    script_.train(on && !is_frozen("backbone"));
  }

 protected:
  torch::Tensor compute_embedding(const torch::Tensor& x) override {
    if (!per_image_ || x.size(0) == 1) return run(x);
    std::vector<torch::Tensor> rows;
    for (int64_t i = 0; i < x.size(0); ++i) rows.push_back(run(x.narrow(0, i, 1)));
    return torch::cat(rows);
  }

 private:
  torch::Tensor run(const torch::Tensor& x) {
    torch::IValue out;
    try {
      out = script_.forward({x});
    } catch (const c10::Error& e) {
      throw InvalidArgument(
          path_ + ": the TorchScript module failed on its input: " + e.what_without_backtrace());
    } catch (const std::runtime_error& e) {
      // The interpreter rethrows failures inside the module as plain runtime errors.
      throw InvalidArgument(path_ + ": the TorchScript module failed on its input: " + e.what());
    }
    if (!out.isTensor())
      throw InvalidArgument(path_ + ": the TorchScript module must return a tensor");
    auto y = out.toTensor();
    if (y.is_quantized()) y = y.dequantize();
    if (y.dim() == 4) return detail::global_avg_pool(y);
    if (y.dim() < 2)
      throw InvalidArgument(path_ + ": the TorchScript module returned a scalar or 1-D output");
    return y.flatten(1);
  }

  // The module's tensors become this model's parameters and buffers (the same
  // tensors, under "backbone."), so optimisers, freezing and state_dict see them.
  void mirror_tensors() {
    auto root = register_module("backbone", std::make_shared<torch::nn::Module>());
    auto owner = [&](const std::string& name, std::string& leaf) {
      torch::nn::Module* m = root.get();
      std::string rest = name;
      for (auto dot = rest.find('.'); dot != std::string::npos; dot = rest.find('.')) {
        const auto part = rest.substr(0, dot);
        const auto children = m->named_children();  // a copy: alive while `child` points into it
        const auto* child = children.find(part);
        m = child ? child->get()
                  : m->register_module(part, std::make_shared<torch::nn::Module>()).get();
        rest = rest.substr(dot + 1);
      }
      leaf = rest;
      return m;
    };
    std::string leaf;
    for (const auto& p : script_.named_parameters(/*recurse=*/true)) {
      owner(p.name, leaf)->register_parameter(leaf, p.value, p.value.requires_grad());
    }
    for (const auto& b : script_.named_buffers(/*recurse=*/true)) {
      owner(b.name, leaf)->register_buffer(leaf, b.value);
    }
  }

  std::string path_;
  torch::jit::Module script_;
  bool per_image_ = false;
};

}  // namespace

Model load_torchscript_backbone(const std::string& path, int64_t num_classes,
                                const Preprocess& preprocess) {
  if (num_classes <= 0) {
    throw InvalidArgument("torchscript backbone: num_classes must be positive, got " +
                          std::to_string(num_classes));
  }
  return Model(std::shared_ptr<ModelImpl>(
      std::make_shared<TorchScriptBackboneImpl>(path, num_classes, preprocess)));
}

}  // namespace tlcore::models
