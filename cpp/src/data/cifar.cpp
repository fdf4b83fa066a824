// CIFAR-10 and CIFAR-100, binary version: fixed-size records of label byte(s)
// then 32x32 planar RGB. The files are held in memory as they are.
#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <utility>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "internal/checks.h"
#include "internal/file_io.h"
#include "tlcore/data/sources.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

namespace fs = std::filesystem;

constexpr int kSide = 32;
constexpr std::size_t kPlane = kSide * kSide;
constexpr std::size_t kPixels = 3 * kPlane;

constexpr std::array<const char*, 10> kCifar10Names = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};

constexpr std::array<const char*, 100> kCifar100Fine = {
    "apple",       "aquarium_fish", "baby",      "bear",       "beaver",       "bed",
    "bee",         "beetle",        "bicycle",   "bottle",     "bowl",         "boy",
    "bridge",      "bus",           "butterfly", "camel",      "can",          "castle",
    "caterpillar", "cattle",        "chair",     "chimpanzee", "clock",        "cloud",
    "cockroach",   "couch",         "crab",      "crocodile",  "cup",          "dinosaur",
    "dolphin",     "elephant",      "flatfish",  "forest",     "fox",          "girl",
    "hamster",     "house",         "kangaroo",  "keyboard",   "lamp",         "lawn_mower",
    "leopard",     "lion",          "lizard",    "lobster",    "man",          "maple_tree",
    "motorcycle",  "mountain",      "mouse",     "mushroom",   "oak_tree",     "orange",
    "orchid",      "otter",         "palm_tree", "pear",       "pickup_truck", "pine_tree",
    "plain",       "plate",         "poppy",     "porcupine",  "possum",       "rabbit",
    "raccoon",     "ray",           "road",      "rocket",     "rose",         "sea",
    "seal",        "shark",         "shrew",     "skunk",      "skyscraper",   "snail",
    "snake",       "spider",        "squirrel",  "streetcar",  "sunflower",    "sweet_pepper",
    "table",       "tank",          "telephone", "television", "tiger",        "tractor",
    "train",       "trout",         "tulip",     "turtle",     "wardrobe",     "whale",
    "willow_tree", "wolf",          "woman",     "worm"};

constexpr std::array<const char*, 20> kCifar100Coarse = {"aquatic_mammals",
                                                         "fish",
                                                         "flowers",
                                                         "food_containers",
                                                         "fruit_and_vegetables",
                                                         "household_electrical_devices",
                                                         "household_furniture",
                                                         "insects",
                                                         "large_carnivores",
                                                         "large_man-made_outdoor_things",
                                                         "large_natural_outdoor_scenes",
                                                         "large_omnivores_and_herbivores",
                                                         "medium_mammals",
                                                         "non-insect_invertebrates",
                                                         "people",
                                                         "reptiles",
                                                         "small_mammals",
                                                         "trees",
                                                         "vehicles_1",
                                                         "vehicles_2"};

class Cifar final : public Dataset {
 public:
  Cifar(std::vector<std::string> files, std::vector<std::int64_t> file_starts,
        std::vector<std::uint8_t> records, std::size_t label_bytes, std::size_t label_byte,
        std::vector<std::string> classes)
      : files_(std::move(files)),
        file_starts_(std::move(file_starts)),
        records_(std::move(records)),
        record_size_(label_bytes + kPixels),
        label_bytes_(label_bytes),
        label_byte_(label_byte),
        classes_(std::move(classes)) {}

  std::int64_t size() const override {
    return static_cast<std::int64_t>(records_.size() / record_size_);
  }

  std::int64_t label(std::int64_t index) const override { return record(index)[label_byte_]; }

  const std::vector<std::string>& classes() const override { return classes_; }

  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override {
    internal::check_options(options);
    // cv::merge only reads its inputs; the headers wrap the planes without copying.
    auto* pixels = const_cast<std::uint8_t*>(record(index) + label_bytes_);
    const cv::Mat planes[3] = {cv::Mat(kSide, kSide, CV_8UC1, pixels),
                               cv::Mat(kSide, kSide, CV_8UC1, pixels + kPlane),
                               cv::Mat(kSide, kSide, CV_8UC1, pixels + 2 * kPlane)};
    cv::Mat rgb;
    cv::merge(planes, 3, rgb);
    if (options.channels == 3) return rgb;
    cv::Mat gray;
    cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
    return gray;
  }

  std::string source(std::int64_t index) const override {
    internal::check_index(index, size());
    const auto file = std::upper_bound(file_starts_.begin(), file_starts_.end(), index) - 1;
    return files_[static_cast<std::size_t>(file - file_starts_.begin())] + "#" +
           std::to_string(index - *file);
  }

 private:
  const std::uint8_t* record(std::int64_t index) const {
    internal::check_index(index, size());
    return records_.data() + static_cast<std::size_t>(index) * record_size_;
  }

  std::vector<std::string> files_;
  std::vector<std::int64_t> file_starts_;  // index of each file's first record
  std::vector<std::uint8_t> records_;
  std::size_t record_size_;
  std::size_t label_bytes_;
  std::size_t label_byte_;
  std::vector<std::string> classes_;
};

bool is_file(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// One name a line (blank lines ignored), or the standard names when the file is absent.
template <std::size_t N>
std::vector<std::string> class_names(const fs::path& file,
                                     const std::array<const char*, N>& standard) {
  if (!is_file(file)) return {standard.begin(), standard.end()};
  std::ifstream in(file);
  if (!in) throw Error(file.string() + ": cannot open");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t end = line.find_last_not_of(" \t\r");
    if (end != std::string::npos) names.push_back(line.substr(0, end + 1));
  }
  if (names.size() != N) {
    throw FormatError(file.string() + ": expected " + std::to_string(N) + " class names, found " +
                      std::to_string(names.size()));
  }
  return names;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

std::shared_ptr<Dataset> open_cifar(const std::string& path, bool train, CifarLabel label) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) throw NotFound(path + ": no such file or folder");

  fs::path dir;
  std::vector<std::string> files;
  bool cifar100 = false;
  if (fs::is_directory(status)) {
    dir = path;
    const bool has10 = is_file(dir / "data_batch_1.bin") || is_file(dir / "test_batch.bin");
    const bool has100 = is_file(dir / "train.bin") || is_file(dir / "test.bin");
    if (has10 == has100) {
      throw FormatError(path + (has10 ? ": holds both CIFAR-10 and CIFAR-100 files"
                                      : ": no CIFAR-10 (data_batch_N.bin, test_batch.bin) or "
                                        "CIFAR-100 (train.bin, test.bin) files"));
    }
    cifar100 = has100;
    if (cifar100) {
      files = {(dir / (train ? "train.bin" : "test.bin")).string()};
    } else if (train) {
      for (int i = 1; i <= 5; ++i) {
        files.push_back((dir / ("data_batch_" + std::to_string(i) + ".bin")).string());
      }
    } else {
      files = {(dir / "test_batch.bin").string()};
    }
  } else {
    const fs::path file(path);
    dir = file.parent_path();
    const std::string name = file.filename().string();
    if (name == "train.bin" || name == "test.bin") {
      cifar100 = true;
    } else if (starts_with(name, "data_batch_") || starts_with(name, "test_batch")) {
      cifar100 = false;
    } else if (is_file(dir / "fine_label_names.txt") != is_file(dir / "batches.meta.txt")) {
      cifar100 = is_file(dir / "fine_label_names.txt");
    } else {
      throw FormatError(path +
                        ": cannot tell CIFAR-10 from CIFAR-100 (expected data_batch_N.bin, "
                        "test_batch.bin, train.bin or test.bin)");
    }
    files = {path};
  }

  std::vector<std::string> classes;
  std::size_t label_byte = 0;
  if (cifar100) {
    if (label == CifarLabel::kCoarse) {
      classes = class_names(dir / "coarse_label_names.txt", kCifar100Coarse);
    } else {
      classes = class_names(dir / "fine_label_names.txt", kCifar100Fine);
      label_byte = 1;
    }
  } else {
    if (label == CifarLabel::kCoarse) {
      throw InvalidArgument(path + ": CIFAR-10 has no coarse labels");
    }
    classes = class_names(dir / "batches.meta.txt", kCifar10Names);
  }

  const std::size_t label_bytes = cifar100 ? 2 : 1;
  const std::size_t record_size = label_bytes + kPixels;
  // Each label byte's range: CIFAR-100 has (coarse, fine), CIFAR-10 one label.
  const std::array<std::size_t, 2> limits = {cifar100 ? kCifar100Coarse.size() : classes.size(),
                                             kCifar100Fine.size()};
  std::uint64_t total = 0;
  for (const std::string& file : files) total += internal::file_size(file);
  std::vector<std::uint8_t> records;
  records.reserve(static_cast<std::size_t>(total) + 1);
  std::vector<std::int64_t> file_starts;
  for (const std::string& file : files) {
    const std::size_t start = records.size();
    internal::append_file(file, records);
    const std::size_t length = records.size() - start;
    if (length == 0 || length % record_size != 0) {
      throw FormatError(file + ": length " + std::to_string(length) +
                        " bytes is not a positive multiple of the " + std::to_string(record_size) +
                        "-byte " + (cifar100 ? "CIFAR-100" : "CIFAR-10") + " record");
    }
    file_starts.push_back(static_cast<std::int64_t>(start / record_size));
    for (std::size_t offset = start; offset < records.size(); offset += record_size) {
      for (std::size_t b = 0; b < label_bytes; ++b) {
        if (records[offset + b] >= limits[b]) {
          throw FormatError(file + "#" + std::to_string((offset - start) / record_size) +
                            ": label " + std::to_string(records[offset + b]) + " out of range (" +
                            std::to_string(limits[b]) + " classes)");
        }
      }
    }
  }
  return std::make_shared<Cifar>(std::move(files), std::move(file_starts), std::move(records),
                                 label_bytes, label_byte, std::move(classes));
}

}  // namespace tlcore
