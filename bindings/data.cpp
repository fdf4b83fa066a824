#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "tlcore/data/dataset.h"
#include "tlcore/data/decode.h"
#include "tlcore/data/shards.h"
#include "tlcore/data/sources.h"
#include "tlcore/data/split.h"
#include "tlcore/data/tfrecord.h"
#include "tlcore/error.h"

namespace py = pybind11;

namespace tlcore::bindings {
namespace {

using Indices = py::array_t<std::int64_t>;

// Continuous HxWxC uint8 image copied into a numpy array Python owns.
py::array_t<std::uint8_t> to_array(const cv::Mat& image) {
  py::array_t<std::uint8_t> out({image.rows, image.cols, image.channels()});
  std::memcpy(out.mutable_data(), image.data, image.total() * image.elemSize());
  return out;
}

Indices to_indices(const std::vector<std::int64_t>& values) {
  return Indices(static_cast<py::ssize_t>(values.size()), values.data());
}

py::dict to_dict(const ScanStats& stats) {
  py::dict d;
  d["hidden"] = stats.hidden;
  d["non_image"] = stats.non_image;
  d["outside_classes"] = stats.outside_classes;
  return d;
}

// A scanning source, opened with the GIL released, with what the scan skipped
// as its `stats` attribute.
template <typename Open>
py::object open_scanned(Open open, const std::string& path) {
  ScanStats stats;
  std::shared_ptr<Dataset> data;
  {
    py::gil_scoped_release release;
    data = open(path, &stats);
  }
  py::object object = py::cast(std::move(data));
  object.attr("stats") = to_dict(stats);
  return object;
}

CifarLabel cifar_label(const std::string& name) {
  if (name == "fine") return CifarLabel::kFine;
  if (name == "coarse") return CifarLabel::kCoarse;
  throw InvalidArgument("label must be 'fine' or 'coarse', got '" + name + "'");
}

}  // namespace

void bind_data(py::module_& m) {
  py::class_<Dataset, std::shared_ptr<Dataset>>(
      m, "Dataset", "Labelled images addressed by index; immutable, safe to share between threads.",
      py::dynamic_attr())
      .def("__len__", &Dataset::size)
      .def("label", &Dataset::label, py::arg("index"))
      .def(
          "labels", [](const Dataset& d) { return to_indices(d.labels()); },
          "All labels as an int64 array, in index order.")
      .def_property_readonly("classes", &Dataset::classes)
      .def(
          "image",
          [](const Dataset& d, std::int64_t index, int channels, int min_side) {
            cv::Mat image;
            {
              py::gil_scoped_release release;
              image = d.image(index, {channels, min_side});
            }
            return to_array(image);
          },
          py::arg("index"), py::arg("channels") = 3, py::arg("min_side") = 0,
          "Sample `index` as a uint8 HxWxC array (RGB when channels=3).")
      .def("source", &Dataset::source, py::arg("index"),
           "Where the sample comes from: a path, 'archive:member' or 'file#record'.")
      .def(
          "encoded",
          [](const Dataset& d, std::int64_t index) {
            std::vector<std::uint8_t> bytes;
            {
              py::gil_scoped_release release;
              bytes = d.encoded(index);
            }
            return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
          },
          py::arg("index"),
          "The sample's image file as stored (JPEG, PNG, ...); b'' for CIFAR and IDX.")
      .def("shard_starts", &Dataset::shard_starts,
           "Where each shard's run of samples begins (empty for data without shards).");

  py::class_<Subset, Dataset, std::shared_ptr<Subset>>(m, "Subset",
                                                       "A view on a dataset through indices.")
      .def(py::init([](std::shared_ptr<Dataset> parent, std::vector<std::int64_t> indices) {
             return std::make_shared<Subset>(std::move(parent), std::move(indices));
           }),
           py::arg("dataset"), py::arg("indices"))
      .def_property_readonly("indices", [](const Subset& s) { return to_indices(s.indices()); });

  m.def(
      "open_image_folder",
      [](const std::string& root) { return open_scanned(open_image_folder, root); },
      py::arg("root"),
      "root/<class>/<image>; .stats counts the hidden, non-image and out-of-class files skipped.");
  m.def(
      "open_image_archive",
      [](const std::string& path) { return open_scanned(open_image_archive, path); },
      py::arg("path"),
      "The image-folder layout inside a tar archive (read in memory); .stats as "
      "open_image_folder.");
  m.def(
      "open_cifar",
      [](const std::string& path, bool train, const std::string& label) {
        const CifarLabel which = cifar_label(label);
        py::gil_scoped_release release;
        return open_cifar(path, train, which);
      },
      py::arg("path"), py::arg("train") = true, py::arg("label") = "fine",
      "CIFAR-10/100 binary version: a cifar-10-batches-bin / cifar-100-binary folder or a .bin "
      "file.");
  m.def("open_idx", &open_idx, py::arg("images"), py::arg("labels"),
        py::arg("class_names") = std::vector<std::string>{},
        py::call_guard<py::gil_scoped_release>(),
        "MNIST-style IDX images and labels (gzip or not).");
  m.def(
      "open_tfrecords",
      [](const std::string& pattern, std::string image_key, std::string label_key,
         std::vector<std::string> classes, std::string index_dir) {
        TfRecordOptions options;
        options.image_key = std::move(image_key);
        options.label_key = std::move(label_key);
        options.classes = std::move(classes);
        options.index_dir = std::move(index_dir);
        return open_tfrecords(pattern, options);
      },
      py::arg("pattern"), py::arg("image_key") = "image", py::arg("label_key") = "class",
      py::arg("classes") = std::vector<std::string>{}, py::arg("index_dir") = "",
      py::call_guard<py::gil_scoped_release>(),
      "tf.train.Example TFRecords (a file, a glob or brace range of shards, a folder or a list "
      "file): an encoded image in bytes feature image_key, the class in int64 feature "
      "label_key. Record indexes are cached in index_dir (default: the user's cache folder).");
  m.def(
      "open_shards",
      [](const std::string& pattern, std::vector<std::string> classes, std::string index_dir,
         bool skip_corrupt, int max_open, bool index_beside, std::uint64_t stream_memory) {
        ShardOptions options;
        options.index_beside = index_beside;
        options.stream_memory = stream_memory;
        options.classes = std::move(classes);
        options.index_dir = std::move(index_dir);
        options.skip_corrupt = skip_corrupt;
        options.max_open = max_open;
        ShardStats stats;
        std::shared_ptr<Dataset> data;
        {
          py::gil_scoped_release release;
          data = open_shards(pattern, options, &stats);
        }
        py::object object = py::cast(std::move(data));
        py::dict d;
        d["shards"] = stats.shards;
        d["indexed"] = stats.indexed;
        d["skipped"] = stats.skipped;
        d["non_image"] = stats.non_image;
        d["problems"] = stats.problems;
        object.attr("stats") = d;
        return object;
      },
      py::arg("pattern"), py::arg("classes") = std::vector<std::string>{},
      py::arg("index_dir") = "", py::arg("skip_corrupt") = false, py::arg("max_open") = 0,
      py::arg("index_beside") = false, py::arg("stream_memory") = ShardOptions{}.stream_memory,
      "Tar shards (WebDataset keys with .cls/.json labels, or class folders), indexed once; "
      "plain ones read in place, compressed ones streamed; .stats says what the open indexed "
      "and skipped.");
  m.attr("TAR_SHARD_EXTENSIONS") = tar_shard_extensions();

  m.def(
      "stratified_split",
      [](const std::vector<std::int64_t>& labels, double val_fraction, std::uint64_t seed) {
        const Split split = stratified_split(labels, val_fraction, seed);
        return py::make_tuple(to_indices(split.train), to_indices(split.val));
      },
      py::arg("labels"), py::arg("val_fraction"), py::arg("seed") = 0,
      "(train, val) sorted index arrays: round(n * val_fraction) of each class in val.");
  m.def(
      "per_class_subset",
      [](const std::vector<std::int64_t>& labels, std::int64_t per_class, std::uint64_t seed) {
        return to_indices(per_class_subset(labels, per_class, seed));
      },
      py::arg("labels"), py::arg("per_class"), py::arg("seed") = 0,
      "Sorted indices of at most per_class samples of each class.");

  m.def(
      "decode_image",
      [](const py::buffer& data, int channels, int min_side, const std::string& source) {
        const py::buffer_info info = data.request();
        if (info.itemsize != 1 || (info.ndim == 1 && info.strides[0] != 1) || info.ndim > 1) {
          throw InvalidArgument(source + ": expected contiguous bytes");
        }
        cv::Mat image;
        {
          py::gil_scoped_release release;
          image = decode_image(static_cast<const std::uint8_t*>(info.ptr),
                               static_cast<std::size_t>(info.size), {channels, min_side}, source);
        }
        return to_array(image);
      },
      py::arg("data"), py::arg("channels") = 3, py::arg("min_side") = 0,
      py::arg("source") = "<bytes>", "Decodes an encoded image held in memory to uint8 HxWxC.");
  m.def(
      "read_image",
      [](const std::string& path, int channels, int min_side) {
        cv::Mat image;
        {
          py::gil_scoped_release release;
          image = read_image(path, {channels, min_side});
        }
        return to_array(image);
      },
      py::arg("path"), py::arg("channels") = 3, py::arg("min_side") = 0,
      "Reads and decodes an image file to uint8 HxWxC (RGB when channels=3).");
  m.def("has_image_extension", &has_image_extension, py::arg("name"),
        "True for .jpg .jpeg .png .bmp .webp in any case.");
  m.def(
      "image_extension",
      [](const py::bytes& data) {
        char* bytes = nullptr;
        Py_ssize_t size = 0;
        PyBytes_AsStringAndSize(data.ptr(), &bytes, &size);
        return image_extension(reinterpret_cast<const std::uint8_t*>(bytes),
                               static_cast<std::size_t>(size));
      },
      py::arg("data"),
      "'jpg', 'png', 'bmp' or 'webp' for encoded image bytes, by their signature; '' otherwise.");
  m.def(
      "image_dimensions",
      [](const py::bytes& data) {
        char* bytes = nullptr;
        Py_ssize_t size = 0;
        PyBytes_AsStringAndSize(data.ptr(), &bytes, &size);  // a view: no copy of the image
        return image_dimensions(reinterpret_cast<const std::uint8_t*>(bytes),
                                static_cast<std::size_t>(size));
      },
      py::arg("data"),
      "(width, height) from a JPEG, PNG, BMP or WEBP header, without decoding; (0, 0) otherwise.");
}

}  // namespace tlcore::bindings
