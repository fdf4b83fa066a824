#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "bindings.h"
#include "tlcore/augment/ops.h"
#include "tlcore/augment/pipeline.h"
#include "tlcore/augment/rng.h"
#include "tlcore/augment/serialize.h"
#include "tlcore/error.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

using Size = std::pair<int, int>;  // (height, width)
using Range = std::pair<double, double>;

}  // namespace

cv::Mat to_mat(const py::array& array) {
  if (!py::dtype::of<std::uint8_t>().is(array.dtype())) {
    throw InvalidArgument("expected a uint8 image, got dtype " +
                          py::str(array.dtype()).cast<std::string>());
  }
  const auto ndim = array.ndim();
  const py::ssize_t channels = ndim == 3 ? array.shape(2) : 1;
  if ((ndim != 2 && ndim != 3) || (channels != 1 && channels != 3) || array.size() == 0) {
    throw InvalidArgument("expected an HxW, HxWx1 or HxWx3 image, got shape " +
                          py::str(array.attr("shape")).cast<std::string>());
  }
  const auto contiguous = py::array_t<std::uint8_t, py::array::c_style>::ensure(array);
  const cv::Mat view(static_cast<int>(array.shape(0)), static_cast<int>(array.shape(1)),
                     CV_8UC(static_cast<int>(channels)),
                     const_cast<std::uint8_t*>(contiguous.data()));
  return view.clone();
}

namespace {

py::array_t<std::uint8_t> to_array(const cv::Mat& image) {
  py::array_t<std::uint8_t> out({image.rows, image.cols, image.channels()});
  cv::Mat view(image.rows, image.cols, image.type(), out.mutable_data());
  image.copyTo(view);
  return out;
}

// op(image, seed, epoch, index): one op on one image, the GIL released while it runs.
py::array_t<std::uint8_t> run_op(const Op& op, const py::array& image, std::uint64_t seed,
                                 std::uint64_t epoch, std::uint64_t index) {
  const cv::Mat input = to_mat(image);
  cv::Mat out;
  {
    py::gil_scoped_release release;
    Rng rng(seed, epoch, index);
    out = op.apply(input, rng);
  }
  return to_array(out);
}

template <class T>
using OpClass = py::class_<T, Op, std::shared_ptr<T>>;

}  // namespace

void bind_augment(py::module_& m) {
  py::class_<Rng>(m, "Rng", "Random stream of one sample: seeded by (seed, epoch, index).")
      .def(py::init<std::uint64_t, std::uint64_t, std::uint64_t>(), py::arg("seed"),
           py::arg("epoch") = 0, py::arg("index") = 0)
      .def("uniform", &Rng::uniform, py::arg("lo"), py::arg("hi"), "Uniform in [lo, hi).")
      .def("integer", &Rng::integer, py::arg("lo"), py::arg("hi"), "Uniform in [lo, hi].")
      .def("bernoulli", &Rng::bernoulli, py::arg("p"), "True with probability p.");

  py::class_<Op, std::shared_ptr<Op>>(m, "Op", "One augmentation step on a uint8 HxWxC image.")
      .def("__call__", &run_op, py::arg("image"), py::arg("seed") = 0, py::arg("epoch") = 0,
           py::arg("index") = 0, "Applies the op with the draws of Rng(seed, epoch, index).")
      .def("min_input_side", &Op::min_input_side, py::arg("after") = 0)
      .def(
          "to_json", [](const Op& op) { return op.to_json().dump(); },
          "The op and its parameters as JSON text.")
      .def("__repr__", &Op::repr);

  OpClass<Resize>(m, "Resize", "Shorter side to `size` (torchvision's Resize(int)), or (h, w).")
      .def(py::init<int>(), py::arg("size"))
      .def(py::init([](Size size) { return std::make_shared<Resize>(size.first, size.second); }),
           py::arg("size"));

  OpClass<CenterCrop>(m, "CenterCrop", "torchvision's CenterCrop, zero padding included.")
      .def(py::init<int>(), py::arg("size"))
      .def(
          py::init([](Size size) { return std::make_shared<CenterCrop>(size.first, size.second); }),
          py::arg("size"));

  const auto make_rrc = [](Size size, Range scale, Range ratio) {
    return std::make_shared<RandomResizedCrop>(size.first, size.second,
                                               std::array<double, 2>{scale.first, scale.second},
                                               std::array<double, 2>{ratio.first, ratio.second});
  };
  OpClass<RandomResizedCrop>(m, "RandomResizedCrop",
                             "torchvision's RandomResizedCrop (same get_params algorithm).")
      .def(py::init([make_rrc](int size, Range scale, Range ratio) {
             return make_rrc({size, size}, scale, ratio);
           }),
           py::arg("size"), py::arg("scale") = Range{0.08, 1.0},
           py::arg("ratio") = Range{3.0 / 4.0, 4.0 / 3.0})
      .def(py::init(make_rrc), py::arg("size"), py::arg("scale") = Range{0.08, 1.0},
           py::arg("ratio") = Range{3.0 / 4.0, 4.0 / 3.0})
      .def(
          "sample",
          [](const RandomResizedCrop& op, int height, int width, Rng& rng) {
            const CropBox box = op.sample(cv::Size(width, height), rng).box;
            return std::make_tuple(box.top, box.left, box.height, box.width);
          },
          py::arg("height"), py::arg("width"), py::arg("rng"),
          "The box (top, left, height, width) for an input of height x width, as get_params.");

  OpClass<PadRandomCrop>(m, "PadRandomCrop",
                         "Pad by `padding` then a random crop of `size` (CIFAR's augmentation).")
      .def(py::init([](int size, int padding, const std::string& mode) {
             return std::make_shared<PadRandomCrop>(size, padding, parse_pad_mode(mode));
           }),
           py::arg("size"), py::arg("padding"), py::arg("padding_mode") = "zero")
      .def(
          "sample",
          [](const PadRandomCrop& op, int height, int width, Rng& rng) {
            const CropBox box = op.sample(cv::Size(width, height), rng);
            return std::make_tuple(box.top, box.left, box.height, box.width);
          },
          py::arg("height"), py::arg("width"), py::arg("rng"),
          "The box (top, left, height, width) in the unpadded input's pixel grid.");

  OpClass<RandomHorizontalFlip>(m, "RandomHorizontalFlip")
      .def(py::init<double>(), py::arg("p") = 0.5)
      .def("sample", &RandomHorizontalFlip::sample, py::arg("rng"));

  OpClass<RandomRotation>(m, "RandomRotation",
                          "Counter-clockwise rotation by an angle uniform in [-degrees, degrees] "
                          "(or [min, max]), about the centre, zero fill, bilinear.")
      .def(py::init<double>(), py::arg("degrees"))
      .def(py::init([](Range degrees) {
             return std::make_shared<RandomRotation>(degrees.first, degrees.second);
           }),
           py::arg("degrees"))
      .def("sample", &RandomRotation::sample, py::arg("rng"));

  OpClass<RandomZoom>(m, "RandomZoom",
                      "Keras' zoom_range: a factor uniform in [1 - f, 1 + f] (or [min, max]); "
                      "below 1 zooms in.")
      .def(py::init<double>(), py::arg("factor"))
      .def(py::init([](Range factor) {
             return std::make_shared<RandomZoom>(factor.first, factor.second);
           }),
           py::arg("factor"))
      .def("sample", &RandomZoom::sample, py::arg("rng"));

  OpClass<ColorJitter>(m, "ColorJitter",
                       "torchvision's ColorJitter without hue, in the fixed order brightness, "
                       "contrast, saturation.")
      .def(py::init<double, double, double>(), py::arg("brightness") = 0.0,
           py::arg("contrast") = 0.0, py::arg("saturation") = 0.0)
      .def(
          "sample",
          [](const ColorJitter& op, Rng& rng) {
            const JitterParams p = op.sample(rng);
            return std::make_tuple(p.brightness, p.contrast, p.saturation);
          },
          py::arg("rng"), "The factors (brightness, contrast, saturation).");

  OpClass<Grayscale3>(m, "Grayscale3", "PIL's luma replicated to 3 channels.").def(py::init<>());

  OpClass<RandomGrayscale>(m, "RandomGrayscale")
      .def(py::init<double>(), py::arg("p") = 0.1)
      .def("sample", &RandomGrayscale::sample, py::arg("rng"));

  const auto make_pipeline = [](const std::vector<std::shared_ptr<Op>>& ops, Size size,
                                std::vector<float> mean, std::vector<float> std, int channels) {
    return std::make_shared<Pipeline>(std::vector<OpPtr>(ops.begin(), ops.end()), size.first,
                                      size.second, std::move(mean), std::move(std), channels);
  };
  py::class_<Pipeline, std::shared_ptr<Pipeline>>(
      m, "Pipeline", "Augmentation ops with a fixed output size and per-channel mean/std.")
      .def(py::init(make_pipeline), py::arg("ops"), py::arg("size"), py::arg("mean"),
           py::arg("std"), py::arg("channels") = 3)
      .def(py::init([make_pipeline](const std::vector<std::shared_ptr<Op>>& ops, int size,
                                    std::vector<float> mean, std::vector<float> std, int channels) {
             return make_pipeline(ops, {size, size}, std::move(mean), std::move(std), channels);
           }),
           py::arg("ops"), py::arg("size"), py::arg("mean"), py::arg("std"),
           py::arg("channels") = 3)
      .def_static(
          "preset",
          [](const std::string& name, int size, int channels) {
            return std::make_shared<Pipeline>(Pipeline::preset(name, size, channels));
          },
          py::arg("name"), py::arg("size"), py::arg("channels") = 3,
          "imagenet-train, imagenet-eval, cifar-train or cifar-eval at `size`.")
      .def(
          "__call__",
          [](const Pipeline& pipeline, const py::array& image, std::uint64_t seed,
             std::uint64_t epoch, std::uint64_t index) {
            const cv::Mat input = to_mat(image);
            cv::Mat out;
            {
              py::gil_scoped_release release;
              Rng rng(seed, epoch, index);
              out = pipeline.augment(input, rng);
            }
            return to_array(out);
          },
          py::arg("image"), py::arg("seed") = 0, py::arg("epoch") = 0, py::arg("index") = 0,
          "The augmented uint8 HxWxC image, drawn from Rng(seed, epoch, index).")
      .def(
          "normalize",
          [](const Pipeline& pipeline, const py::array& image) {
            const cv::Mat input = to_mat(image);
            py::array_t<float> out(
                {pipeline.channels(), pipeline.out_height(), pipeline.out_width()});
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              pipeline.normalize_into(input, data);
            }
            return out;
          },
          py::arg("image"), "float32 CxHxW (x / 255 - mean) / std of an output-sized image.")
      .def_property_readonly("ops",
                             [](const Pipeline& pipeline) {
                               // Python has no const; no bound method mutates an op.
                               std::vector<std::shared_ptr<Op>> ops;
                               for (const OpPtr& op : pipeline.ops()) {
                                 ops.push_back(std::const_pointer_cast<Op>(op));
                               }
                               return ops;
                             })
      .def_property_readonly("size",
                             [](const Pipeline& pipeline) {
                               return Size{pipeline.out_height(), pipeline.out_width()};
                             })
      .def_property_readonly("mean", &Pipeline::mean)
      .def_property_readonly("std", &Pipeline::std)
      .def_property_readonly("channels", &Pipeline::channels)
      .def_property_readonly(
          "min_decode_side",
          [](const Pipeline& pipeline) { return pipeline.decode_options().min_side; },
          "Smallest shorter side a reduced JPEG decode may keep (0: full resolution).")
      .def(
          "to_json", [](const Pipeline& pipeline) { return pipeline_to_json(pipeline).dump(); },
          "The pipeline op by op as JSON text (what a saved model records).")
      .def_static(
          "from_json",
          [](const std::string& text, const std::string& source) {
            return std::make_shared<Pipeline>(pipeline_from_text(text, source));
          },
          py::arg("text"), py::arg("source") = "pipeline", "The inverse of to_json.")
      .def("__repr__", &Pipeline::repr);
}

}  // namespace tlcore::bindings
