#include <torch/extension.h>

#include "bindings.h"
#include "tlcore/error.h"
#include "tlcore/models/checkpoint.h"
#include "tlcore/models/inference.h"
#include "tlcore/models/quantize.h"
#include "tlcore/models/registry.h"
#include "tlcore/models/spec.h"
#include "tlcore/models/torchscript.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

using models::ModelImpl;
using models::StateDict;
using Release = py::call_guard<py::gil_scoped_release>;

py::dict to_dict(const StateDict& state) {
  py::dict d;
  for (const auto& [name, tensor] : state) d[py::str(name)] = tensor;
  return d;
}

StateDict from_dict(const py::dict& d) {
  StateDict state;
  for (const auto& kv : d)
    state.emplace_back(kv.first.cast<std::string>(), kv.second.cast<at::Tensor>());
  return state;
}

models::InferenceOutput inference_output(const std::string& output) {
  if (output == "logits") return models::InferenceOutput::kLogits;
  if (output == "embedding") return models::InferenceOutput::kEmbedding;
  if (output == "features") return models::InferenceOutput::kFeatures;
  throw InvalidArgument("output must be 'logits', 'embedding' or 'features', got '" + output + "'");
}

py::dict preprocess_dict(const models::Preprocess& p) {
  py::dict d;
  d["input_size"] = p.input_size;
  d["resize_size"] = p.resize_size;
  d["mean"] = p.mean;
  d["std"] = p.std;
  d["interpolation"] = p.interpolation;
  return d;
}

}  // namespace

void bind_models(py::module_& m) {
  py::class_<models::Int8Calibration>(
      m, "Int8Calibration",
      "What int8 inference needs: activation scales, chosen on calibration images.")
      .def(py::init<>())
      .def_readwrite("scales", &models::Int8Calibration::scales)
      .def_readwrite("zero_points", &models::Int8Calibration::zero_points)
      .def_readwrite("image_size", &models::Int8Calibration::image_size)
      .def_readwrite("agreement", &models::Int8Calibration::agreement)
      .def_readwrite("output_offset", &models::Int8Calibration::output_offset)
      .def_readwrite("float_first_conv", &models::Int8Calibration::float_first_conv)
      .def_property_readonly("empty", &models::Int8Calibration::empty);

  py::class_<ModelImpl, std::shared_ptr<ModelImpl>>(m, "Model")
      .def("forward", &ModelImpl::forward, py::arg("x"), Release(), "Logits for an NCHW batch.")
      .def("__call__", &ModelImpl::forward, py::arg("x"), Release())
      .def("embed", &ModelImpl::embed, py::arg("x"), Release(), "Pooled embeddings, N x D.")
      .def("features", &ModelImpl::features, py::arg("x"), py::arg("blocks"), Release(),
           "The feature map after the first `blocks` blocks.")
      .def("embed_from", &ModelImpl::embed_from, py::arg("features"), py::arg("blocks"), Release(),
           "The embedding from features(x, blocks).")
      .def_property_readonly("splittable_blocks", &ModelImpl::splittable_blocks)
      .def("classify", &ModelImpl::classify, py::arg("embedding"), Release(),
           "The head alone: logits from N x D embeddings.")
      .def_property_readonly("arch", &ModelImpl::arch)
      .def_property_readonly("embedding_dim", &ModelImpl::embedding_dim)
      .def_property_readonly("num_classes", &ModelImpl::num_classes)
      .def_property_readonly("in_channels", &ModelImpl::in_channels)
      .def_property_readonly("head_name", &ModelImpl::head_name)
      .def_property_readonly(
          "preprocess", [](const ModelImpl& self) { return preprocess_dict(self.preprocess()); })
      .def_property_readonly("blocks",
                             [](const ModelImpl& self) {
                               std::vector<std::string> names;
                               for (const auto& b : self.blocks()) names.push_back(b.name);
                               return names;
                             })
      .def("block_prefixes",
           [](const ModelImpl& self) {
             std::vector<std::pair<std::string, std::vector<std::string>>> out;
             for (const auto& b : self.blocks()) out.emplace_back(b.name, b.prefixes);
             return out;
           })
      .def(
          "set_head",
          [](ModelImpl& self, int64_t num_classes, const std::string& kind, double dropout,
             std::vector<int64_t> hidden) {
            self.set_head(models::HeadOptions(num_classes)
                              .kind(models::parse_head_kind(kind))
                              .dropout(dropout)
                              .hidden(std::move(hidden)));
          },
          py::arg("num_classes"), py::arg("kind") = "linear", py::arg("dropout") = 0.2,
          py::arg("hidden") = std::vector<int64_t>{})
      .def("freeze_backbone", &ModelImpl::freeze_backbone)
      .def("unfreeze_last", &ModelImpl::unfreeze_last, py::arg("k"))
      .def("unfreeze_all", &ModelImpl::unfreeze_all)
      .def("is_frozen", &ModelImpl::is_frozen, py::arg("block"))
      .def_property("batchnorm_eval", &ModelImpl::batchnorm_eval, &ModelImpl::set_batchnorm_eval,
                    "Every BatchNorm layer uses and keeps its running statistics, even when "
                    "trainable (Keras' fine-tuning rule).")
      .def_property_readonly("parameter_count", &ModelImpl::parameter_count)
      .def_property_readonly("trainable_parameter_count", &ModelImpl::trainable_parameter_count)
      .def("train", &ModelImpl::train, py::arg("mode") = true)
      .def("eval", [](ModelImpl& self) { self.train(false); })
      .def_property_readonly("training", [](const ModelImpl& self) { return self.is_training(); })
      .def(
          "to", [](ModelImpl& self, const std::string& device) { self.to(torch::Device(device)); },
          py::arg("device"))
      .def("parameters", [](const ModelImpl& self) { return self.parameters(); })
      .def("named_parameters",
           [](const ModelImpl& self) {
             std::vector<std::pair<std::string, at::Tensor>> out;
             for (const auto& p : self.named_parameters()) out.emplace_back(p.key(), p.value());
             return out;
           })
      .def("parameter_shapes",
           [](const ModelImpl& self) {
             std::vector<std::pair<std::string, std::vector<int64_t>>> out;
             for (const auto& p : self.named_parameters()) {
               out.emplace_back(p.key(), p.value().sizes().vec());
             }
             return out;
           })
      .def("state_dict", [](const ModelImpl& self) { return to_dict(self.state_dict()); })
      .def(
          "load_state_dict",
          [](ModelImpl& self, const py::dict& state, bool strict, bool drop_head) {
            auto entries = from_dict(state);
            py::gil_scoped_release release;
            return models::load_state_dict(
                self, entries, models::LoadOptions().strict(strict).drop_head(drop_head));
          },
          py::arg("state"), py::arg("strict") = true, py::arg("drop_head") = false,
          "Copies a name -> tensor dict in; returns the checkpoint's head entries it dropped.")
      .def(
          "load_checkpoint",
          [](ModelImpl& self, const std::string& path, bool strict, bool drop_head) {
            return models::load_checkpoint(
                self, path, models::LoadOptions().strict(strict).drop_head(drop_head));
          },
          py::arg("path"), py::arg("strict") = true, py::arg("drop_head") = false, Release(),
          "Loads a torch.save'd state dict from C++; returns the head entries it dropped.")
      .def(
          "compile_for_inference",
          [](std::shared_ptr<ModelImpl> self, int64_t image_size, const std::string& output,
             int64_t blocks, const std::string& precision, models::Int8Calibration int8) {
            const auto kind = inference_output(output);
            const auto p = models::parse_precision(precision);
            py::gil_scoped_release release;
            return models::InferenceModel(std::move(self), image_size, kind, blocks, p,
                                          std::move(int8));
          },
          py::arg("image_size") = 0, py::arg("output") = "logits", py::arg("blocks") = 0,
          py::arg("precision") = "fp32", py::arg("int8") = models::Int8Calibration(),
          "A frozen snapshot for fast inference: BatchNorm folded, oneDNN prepacked weights, no "
          "autograd. Compile again after the weights change.")
      .def(
          "save",
          [](const ModelImpl& self, const std::string& path) {
            models::save_state_dict(self.state_dict(), path);
          },
          py::arg("path"), Release());

  py::class_<models::InferenceModel>(m, "InferenceModel")
      .def("forward", &models::InferenceModel::forward, py::arg("x"), Release())
      .def("__call__", &models::InferenceModel::forward, py::arg("x"), Release())
      .def_property_readonly("image_size", &models::InferenceModel::image_size)
      .def_property_readonly("compiled", &models::InferenceModel::compiled)
      .def_property_readonly("precision",
                             [](const models::InferenceModel& self) {
                               return std::string(models::precision_name(self.precision()));
                             })
      .def_property_readonly(
          "chunk", &models::InferenceModel::chunk,
          "Images per run of the graph (larger batches run in chunks; 0: no limit).");

  m.attr("INT8_MIN_AGREEMENT") = models::kMinAgreement;
  m.attr("PRECISIONS") = py::make_tuple(models::precision_name(models::Precision::kFloat32),
                                        models::precision_name(models::Precision::kBFloat16),
                                        models::precision_name(models::Precision::kInt8), "auto");
  m.def("calibrate_int8", &models::calibrate_int8, py::arg("model"), py::arg("image_size"),
        py::arg("batches"), Release());
  m.def(
      "resolve_precision",
      [](const std::string& requested, const models::Int8Calibration& int8) {
        std::string note;
        const auto p = models::resolve_precision(requested, int8, &note);
        return py::make_tuple(models::precision_name(p), note);
      },
      py::arg("requested"), py::arg("int8") = models::Int8Calibration(),
      "(precision, note): what `requested` runs in on this CPU, and why it fell back if it did.");
  m.def("cpu_features", [] { return models::cpu_features_text(models::cpu_features()); });
  m.attr("INT8_WITHOUT_AMX") = models::kInt8WithoutAmx;
  m.def("run_int8_without_amx", &models::run_int8_without_amx,
        "Keeps oneDNN off AMX in this process where the CPU has it; whether int8 can run now.");
  m.def(
      "create_model",
      [](const std::string& arch, int64_t num_classes, int64_t in_channels, int64_t input_size,
         std::vector<int64_t> widths, std::vector<int64_t> depths, double dropout) {
        return models::create_model(arch, num_classes,
                                    models::ModelOptions()
                                        .in_channels(in_channels)
                                        .input_size(input_size)
                                        .widths(std::move(widths))
                                        .depths(std::move(depths))
                                        .dropout(dropout))
            .ptr();
      },
      py::arg("arch"), py::arg("num_classes") = 1000, py::arg("in_channels") = 3,
      py::arg("input_size") = 0, py::arg("widths") = std::vector<int64_t>{},
      py::arg("depths") = std::vector<int64_t>{}, py::arg("dropout") = -1.0, Release());
  m.def("model_names", &models::model_names);
  m.def(
      "load_torchscript_backbone",
      [](const std::string& path, int64_t num_classes, int64_t input_size, int64_t resize_size,
         std::vector<double> mean, std::vector<double> std, const std::string& interpolation) {
        models::Preprocess p{input_size, resize_size, std::move(mean), std::move(std),
                             interpolation};
        return models::load_torchscript_backbone(path, num_classes, p).ptr();
      },
      py::arg("path"), py::arg("num_classes"), py::arg("input_size") = 224,
      py::arg("resize_size") = 256, py::arg("mean") = imagenet_normalization().mean,
      py::arg("std") = imagenet_normalization().std, py::arg("interpolation") = "bilinear",
      Release());
  m.def(
      "read_state_dict",
      [](const std::string& path) {
        StateDict state;
        {
          py::gil_scoped_release release;
          state = models::read_state_dict(path);
        }
        return to_dict(state);
      },
      py::arg("path"), "Reads a torch.save'd state dict in C++ (no pickle module involved).");
  m.def(
      "save_state_dict",
      [](const py::dict& state, const std::string& path) {
        models::save_state_dict(from_dict(state), path);
      },
      py::arg("state"), py::arg("path"));
}

}  // namespace tlcore::bindings
