#include <pybind11/functional.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <nlohmann/json.hpp>
#include <tuple>

#include "bindings.h"
#include "tlcore/memory.h"
#include "tlcore/train/fit_option_fields.h"
#include "tlcore/train/trainer.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

// Python callbacks run with the GIL taken back only for their own duration.
EpochCallback epoch_callback(py::object fn) {
  if (fn.is_none()) return nullptr;
  auto holder = std::make_shared<py::object>(std::move(fn));
  return [holder](const EpochStats& s) {
    py::gil_scoped_acquire gil;
    py::object out = (*holder)(s);
    return out.is_none() || out.cast<bool>();
  };
}

BatchCallback batch_callback(py::object fn) {
  if (fn.is_none()) return nullptr;
  auto holder = std::make_shared<py::object>(std::move(fn));
  return [holder](std::int64_t b, std::int64_t n, double loss) {
    py::gil_scoped_acquire gil;
    (*holder)(b, n, loss);
  };
}

}  // namespace

void bind_train(py::module_& m) {
  py::class_<ScheduleOptions>(m, "ScheduleOptions")
      .def(py::init<>())
      .def_readwrite("name", &ScheduleOptions::name)
      .def_readwrite("warmup_epochs", &ScheduleOptions::warmup_epochs)
      .def_readwrite("warmup_start", &ScheduleOptions::warmup_start)
      .def_readwrite("step_epochs", &ScheduleOptions::step_epochs)
      .def_readwrite("gamma", &ScheduleOptions::gamma)
      .def_readwrite("min_factor", &ScheduleOptions::min_factor)
      .def_readwrite("pct_start", &ScheduleOptions::pct_start)
      .def_readwrite("div_factor", &ScheduleOptions::div_factor)
      .def_readwrite("final_div_factor", &ScheduleOptions::final_div_factor);
  m.def("lr_factor", &lr_factor, py::arg("schedule"), py::arg("step"), py::arg("total_steps"),
        py::arg("steps_per_epoch"));

  py::class_<OptimizerOptions>(m, "OptimizerOptions")
      .def(py::init<>())
      .def_readwrite("name", &OptimizerOptions::name)
      .def_readwrite("lr", &OptimizerOptions::lr)
      .def_readwrite("weight_decay", &OptimizerOptions::weight_decay)
      .def_readwrite("momentum", &OptimizerOptions::momentum)
      .def_readwrite("nesterov", &OptimizerOptions::nesterov)
      .def_readwrite("beta1", &OptimizerOptions::beta1)
      .def_readwrite("beta2", &OptimizerOptions::beta2)
      .def_readwrite("eps", &OptimizerOptions::eps)
      .def_readwrite("layer_decay", &OptimizerOptions::layer_decay);

  py::class_<FitOptions>(m, "FitOptions")
      .def(py::init<>())
      .def_readwrite("epochs", &FitOptions::epochs)
      .def_readwrite("phase", &FitOptions::phase)
      .def_readwrite("optimizer", &FitOptions::optimizer)
      .def_readwrite("schedule", &FitOptions::schedule)
      .def_readwrite("clip_grad_norm", &FitOptions::clip_grad_norm)
      .def_readwrite("label_smoothing", &FitOptions::label_smoothing)
      .def_readwrite("class_weights", &FitOptions::class_weights)
      .def_readwrite("monitor", &FitOptions::monitor)
      .def_readwrite("patience", &FitOptions::patience)
      .def_readwrite("restore_best", &FitOptions::restore_best)
      .def_readwrite("cache_features", &FitOptions::cache_features)
      .def_readwrite("cache_flip", &FitOptions::cache_flip)
      .def_readwrite("cache_shift", &FitOptions::cache_shift)
      .def_readwrite("compile_frozen", &FitOptions::compile_frozen)
      .def_readwrite("channels_last", &FitOptions::channels_last)
      .def_readwrite("device", &FitOptions::device)
      .def_readwrite("amp", &FitOptions::amp)
      .def_readwrite("sync_batchnorm", &FitOptions::sync_batchnorm)
      .def_readwrite("seed", &FitOptions::seed)
      .def_readwrite("epoch_offset", &FitOptions::epoch_offset)
      .def_readwrite("checkpoint", &FitOptions::checkpoint);

  py::class_<EpochStats>(m, "EpochStats")
      .def_readonly("epoch", &EpochStats::epoch)
      .def_readonly("phase", &EpochStats::phase)
      .def_readonly("train_loss", &EpochStats::train_loss)
      .def_readonly("train_accuracy", &EpochStats::train_accuracy)
      .def_readonly("has_val", &EpochStats::has_val)
      .def_readonly("val_loss", &EpochStats::val_loss)
      .def_readonly("val_accuracy", &EpochStats::val_accuracy)
      .def_readonly("val_f1", &EpochStats::val_f1)
      .def_readonly("lr", &EpochStats::lr)
      .def_readonly("seconds", &EpochStats::seconds)
      .def_readonly("images_per_second", &EpochStats::images_per_second)
      .def_readonly("epochs", &EpochStats::epochs, "the phase's epochs as now planned");

  py::class_<FitResult>(m, "FitResult")
      .def_readonly("history", &FitResult::history)
      .def_readonly("best_epoch", &FitResult::best_epoch)
      .def_readonly("stopped_early", &FitResult::stopped_early)
      .def_readonly("resumed", &FitResult::resumed)
      .def_readonly("feature_cache", &FitResult::feature_cache);

  py::class_<Trainer>(m, "Trainer")
      .def(py::init([](std::shared_ptr<models::ModelImpl> model, std::shared_ptr<Loader> train,
                       std::shared_ptr<Loader> val, std::shared_ptr<ProcessGroup> group) {
             return Trainer(models::Model(std::move(model)), std::move(train), std::move(val),
                            std::move(group));
           }),
           py::arg("model"), py::arg("train"), py::arg("val") = nullptr, py::arg("group") = nullptr)
      .def(
          "fit",
          [](Trainer& t, const FitOptions& o, py::object on_epoch, py::object on_batch) {
            auto epoch_cb = epoch_callback(std::move(on_epoch));
            auto batch_cb = batch_callback(std::move(on_batch));
            py::gil_scoped_release release;
            return t.fit(o, epoch_cb, batch_cb);
          },
          py::arg("options"), py::arg("on_epoch") = py::none(), py::arg("on_batch") = py::none());

  m.def(
      "predict",
      [](std::shared_ptr<models::ModelImpl> model, Loader& loader, bool channels_last,
         bool flip_tta, py::object on_batch, bool compiled, const std::string& amp,
         const std::string& precision, const models::Int8Calibration& int8) {
        auto batch_cb = batch_callback(std::move(on_batch));
        const auto p_used = models::parse_precision(precision);
        py::gil_scoped_release release;
        const auto p = predict(models::Model(std::move(model)), loader, channels_last, flip_tta,
                               batch_cb, compiled, amp, p_used, int8);
        py::gil_scoped_acquire gil;
        return py::make_tuple(p.logits, p.labels, p.indices, p.loss);
      },
      py::arg("model"), py::arg("loader"), py::arg("channels_last") = true,
      py::arg("flip_tta") = false, py::arg("on_batch") = py::none(), py::arg("compiled") = true,
      py::arg("amp") = "off", py::arg("precision") = "fp32",
      py::arg("int8") = models::Int8Calibration());
  m.def(
      "resolve_device", &resolve_device, py::arg("device"),
      "The device 'cpu', 'cuda' or 'auto' names here; ValueError if CUDA is asked for and absent.");
  m.def("parse_byte_size", &parse_byte_size, py::arg("text"), py::arg("option") = "size",
        "Bytes from '4GB', '512MiB' or '100000'; -1 for ''.");
  m.def("balanced_class_weights", &balanced_class_weights, py::arg("labels"),
        py::arg("num_classes"));

  m.def(
      "fit_option_fields",
      [] {
        std::vector<std::tuple<std::string, std::string, std::string>> out;
        for (const auto& f : fit_option_fields()) out.emplace_back(f.name, f.type, f.help);
        return out;
      },
      "(name, type, help) of every training option, the one list Learner.fit and the CLI use.");
  m.def(
      "fit_options_to_json", [](const FitOptions& o) { return fit_options_to_json(o).dump(); },
      py::arg("options"), "Every training option by name, as JSON text.");
  m.def(
      "set_fit_options",
      [](FitOptions& o, const std::string& values) {
        set_fit_options(o, nlohmann::json::parse(values));
      },
      py::arg("options"), py::arg("values"),
      "Sets the options that the JSON object `values` names; ValueError for unknown ones.");
}

}  // namespace tlcore::bindings
