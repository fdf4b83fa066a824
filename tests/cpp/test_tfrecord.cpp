// TFRecord shards written here in TensorFlow's format: record framing and
// masked CRC32C from the format's definition, tf.train.Example encoded by hand
// from protobuf's wire-format rules (not through tlcore's own .proto).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "data_fixtures.h"
#include "tlcore/augment/pipeline.h"
#include "tlcore/data/decode.h"
#include "tlcore/data/sources.h"
#include "tlcore/data/tfrecord.h"
#include "tlcore/error.h"
#include "tlcore/loader.h"

namespace tlcore {
namespace {

using namespace data_testing;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ------------------------------------------------------------ reference writers

// CRC-32C bit by bit, straight from the definition (reflected 0x1EDC6F41).
std::uint32_t reference_crc32c(const std::string& bytes) {
  std::uint32_t crc = 0xffffffffu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  return ~crc;
}

std::uint32_t masked(const std::string& bytes) {
  const std::uint32_t crc = reference_crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string le(std::uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xffu);
  return out;
}

// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
std::string frame(const std::string& data) {
  const std::string length = le(data.size(), 8);
  return length + le(masked(length), 4) + data + le(masked(data), 4);
}

// Protobuf wire format: varints, tags and length-delimited fields.
std::string varint(std::uint64_t v) {
  std::string out;
  do {
    const auto low = static_cast<std::uint8_t>(v & 0x7fu);
    v >>= 7;
    out += static_cast<char>(v ? low | 0x80u : low);
  } while (v);
  return out;
}

std::string tag(int field, int wire_type) {
  return varint(static_cast<std::uint64_t>(field) << 3 | static_cast<std::uint64_t>(wire_type));
}

std::string delimited(int field, const std::string& bytes) {
  return tag(field, 2) + varint(bytes.size()) + bytes;
}

// tensorflow.Feature: bytes_list = 1, float_list = 2, int64_list = 3; each list's values = 1.
std::string bytes_feature(const std::vector<std::string>& values) {
  std::string list;
  for (const std::string& v : values) list += delimited(1, v);
  return delimited(1, list);
}

std::string int64_feature(const std::vector<std::int64_t>& values, bool packed = true) {
  std::string list;
  if (packed) {
    std::string payload;
    for (std::int64_t v : values) payload += varint(static_cast<std::uint64_t>(v));
    list = delimited(1, payload);
  } else {
    for (std::int64_t v : values) list += tag(1, 0) + varint(static_cast<std::uint64_t>(v));
  }
  return delimited(3, list);
}

std::string float_feature(float value) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &value, 4);
  return delimited(2, delimited(1, le(bits, 4)));
}

// tensorflow.Example: features = 1; Features: map<string, Feature> feature = 1,
// each entry a message of key = 1, value = 2.
std::string example(const std::vector<std::pair<std::string, std::string>>& features) {
  std::string map;
  for (const auto& [key, feature] : features) {
    map += delimited(1, delimited(1, key) + delimited(2, feature));
  }
  return delimited(1, map);
}

std::string jpeg_of(const cv::Mat& bgr) {
  std::vector<std::uint8_t> buf;
  EXPECT_TRUE(cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_QUALITY, 90}));
  return std::string(buf.begin(), buf.end());
}

// A flowers-style record: the JPEG, its class and the extra features the
// Kaggle files carry ("id"), which the reader must ignore.
std::string flower(const std::string& jpeg, std::int64_t label, bool packed = true) {
  return example({{"id", bytes_feature({"abc123"})},
                  {"image", bytes_feature({jpeg})},
                  {"class", int64_feature({label}, packed)},
                  {"score", float_feature(0.5f)}});
}

struct Shards {
  std::vector<std::string> jpegs;  // in reading order: shard 00 then shard 01
  std::vector<std::int64_t> labels;
  std::vector<std::string> sources;
};

// dir/train-00.tfrec (3 records), dir/train-01.tfrec (2), written in reverse
// order, and a file the pattern must not match.
Shards write_shards(const TempDir& dir) {
  Shards s;
  const std::vector<std::int64_t> labels = {2, 0, 1, 3, 2};
  std::string shard0;
  std::string shard1;
  for (std::size_t k = 0; k < labels.size(); ++k) {
    const std::string jpeg = jpeg_of(test_image(40 + 3 * static_cast<int>(k), 30, int(k)));
    const bool first = k < 3;
    (first ? shard0 : shard1) += frame(flower(jpeg, labels[k], k % 2 == 0));
    s.jpegs.push_back(jpeg);
    s.labels.push_back(labels[k]);
    s.sources.push_back((first ? dir / "train-00.tfrec" : dir / "train-01.tfrec") + "#" +
                        std::to_string(first ? k : k - 3));
  }
  write_bytes(dir / "train-01.tfrec", shard1);
  write_bytes(dir / "train-00.tfrec", shard0);
  write_bytes(dir / "notes.txt", "not a shard");
  return s;
}

// ------------------------------------------------------------------ tests

TEST(TfRecord, ReferenceCrcMatchesTheStandardCheckValue) {
  // The CRC-32C check value of the ASCII digits (RFC 3720, iSCSI).
  EXPECT_EQ(reference_crc32c("123456789"), 0xe3069283u);
}

TEST(TfRecord, RoundTripsJpegBytesAndLabelsAcrossShards) {
  TempDir dir;
  const Shards s = write_shards(dir);
  const auto data = open_tfrecords(dir / "train-*.tfrec");
  ASSERT_EQ(data->size(), 5);
  EXPECT_EQ(data->labels(), s.labels);
  EXPECT_EQ(data->classes(), (std::vector<std::string>{"0", "1", "2", "3"}));
  for (std::int64_t i = 0; i < 5; ++i) {
    const auto k = static_cast<std::size_t>(i);
    EXPECT_EQ(data->source(i), s.sources[k]);
    // The same bytes from a file through the same decoder: identical pixels.
    const std::string path = dir / ("image" + std::to_string(i) + ".jpg");
    write_bytes(path, s.jpegs[k]);
    EXPECT_EQ(max_diff(data->image(i, {}), read_image(path)), 0) << i;
    // And an independent decoder agrees to within IDCT rounding.
    EXPECT_LT(mean_diff(data->image(i, {}), bgr_to_rgb(cv::imread(path))), 1.0) << i;
    EXPECT_EQ(data->image(i, {1, 0}).channels(), 1);
  }
  EXPECT_THROW(data->image(5, {}), InvalidArgument);
}

TEST(TfRecord, FolderSingleFileNamedClassesAndFeatureKeys) {
  TempDir dir;
  const Shards s = write_shards(dir);
  EXPECT_EQ(open_tfrecords(dir.path().string())->labels(), s.labels);
  EXPECT_EQ(open_tfrecords(dir / "train-01.tfrec")->labels(), (std::vector<std::int64_t>{3, 2}));

  const std::vector<std::string> names = {"a", "b", "c", "d", "e"};
  EXPECT_EQ(open_tfrecords(dir / "*.tfrec", {"image", "class", names})->classes(), names);
  const std::string message = error_of<FormatError>([&] {
    open_tfrecords(dir / "*.tfrec", {"image", "class", {"a", "b", "c"}});
  });
  // Label 3 is record 0 of train-01.tfrec, at byte 0.
  EXPECT_TRUE(contains(message, dir / "train-01.tfrec") && contains(message, "byte offset 0") &&
              contains(message, "label 3"))
      << message;

  const std::string jpeg = jpeg_of(test_image(16, 16));
  write_bytes(
      dir / "other/x.tfrecord",
      frame(example({{"image/encoded", bytes_feature({jpeg})}, {"label", int64_feature({3})}})));
  const auto keyed = open_tfrecords(dir / "other/x.tfrecord", {"image/encoded", "label", {}});
  EXPECT_EQ(keyed->labels(), (std::vector<std::int64_t>{3}));
  EXPECT_EQ(keyed->image(0, {}).cols, 16);
}

TEST(TfRecord, FeedsTheLoaderLikeTheSameImagesInAFolder) {
  TempDir dir;
  const Shards s = write_shards(dir);
  for (std::size_t k = 0; k < s.jpegs.size(); ++k) {
    write_bytes(dir / ("folder/" + std::to_string(s.labels[k]) + "/" + std::to_string(k) + ".jpg"),
                s.jpegs[k]);
  }
  // The folder sorts by class: map its order onto the records' order.
  const auto folder = open_image_folder(dir / "folder");
  std::vector<std::int64_t> order;
  for (std::int64_t i = 0; i < folder->size(); ++i) {
    const std::string source = folder->source(i);
    const std::size_t slash = source.find_last_of('/');
    order.push_back(std::stoll(source.substr(slash + 1)));
  }
  const auto records = open_tfrecords(dir / "train-*.tfrec");
  const DatasetPtr reordered = std::make_shared<Subset>(records, order);
  EXPECT_EQ(reordered->labels(), folder->labels());

  auto pipeline = std::make_shared<Pipeline>(Pipeline::preset("imagenet-train", 24));
  LoaderOptions options;
  options.batch_size = 2;
  options.seed = 7;
  options.num_workers = 2;
  // One permutation of every sample for both: the records' shard-by-shard order is
  // the loader's own test.
  options.shuffle_buffer = 0;
  Loader from_records(reordered, pipeline, options);
  Loader from_folder(folder, pipeline, options);
  for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
    from_records.start_epoch(epoch);
    from_folder.start_epoch(epoch);
    std::int64_t batches = 0;
    while (auto a = from_records.next()) {
      auto b = from_folder.next();
      ASSERT_TRUE(b.has_value());
      EXPECT_TRUE(at::equal(a->indices, b->indices));
      EXPECT_TRUE(at::equal(a->labels, b->labels));
      EXPECT_TRUE(at::equal(a->images, b->images));
      ++batches;
    }
    EXPECT_FALSE(from_folder.next().has_value());
    EXPECT_EQ(batches, 3);
  }
}

// The framing errors name the shard, the record and its byte offset.
class TfRecordCorrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int k = 0; k < 3; ++k) {
      const std::size_t offset = bytes_.size();
      offsets_.push_back(offset);
      bytes_ += frame(flower(jpeg_of(test_image(20, 20, k)), k));
    }
  }

  std::string open_error(const std::string& bytes, const TfRecordOptions& options = {}) {
    write_bytes(path_, bytes);
    return error_of<FormatError>([&] { open_tfrecords(path_, options); });
  }

  std::string at_record(int k) const {
    return path_ + ": record " + std::to_string(k) + " at byte offset " +
           std::to_string(offsets_[static_cast<std::size_t>(k)]);
  }

  TempDir dir_;
  std::string path_ = dir_ / "data.tfrecord";
  std::string bytes_;
  std::vector<std::size_t> offsets_;
};

TEST_F(TfRecordCorrupt, LengthCrc) {
  std::string bad = bytes_;
  bad[offsets_[1] + 9] ^= 0x01;
  const std::string message = open_error(bad);
  EXPECT_TRUE(contains(message, at_record(1)) && contains(message, "length CRC")) << message;
}

TEST_F(TfRecordCorrupt, DataCrc) {
  std::string bad = bytes_;
  bad[offsets_[2] + 12 + 30] ^= 0x40;
  const std::string message = open_error(bad);
  EXPECT_TRUE(contains(message, at_record(2)) && contains(message, "data CRC")) << message;
}

TEST_F(TfRecordCorrupt, TruncatedDataAndHeader) {
  std::string message = open_error(bytes_.substr(0, bytes_.size() - 5));
  EXPECT_TRUE(contains(message, at_record(2)) && contains(message, "truncated")) << message;
  message = open_error(bytes_ + std::string(7, '\0'));
  EXPECT_TRUE(
      contains(message, path_ + ": record 3 at byte offset " + std::to_string(bytes_.size())) &&
      contains(message, "truncated record header"))
      << message;
}

TEST_F(TfRecordCorrupt, MissingFeatureWrongTypeAndValueCount) {
  const std::string jpeg = jpeg_of(test_image(8, 8));
  std::string message = open_error(bytes_, {"image", "label", {}});
  EXPECT_TRUE(contains(message, at_record(0)) && contains(message, "no feature 'label'") &&
              contains(message, "'class'"))
      << message;

  message = open_error(
      bytes_ + frame(example({{"image", bytes_feature({jpeg})}, {"class", float_feature(1.0f)}})));
  EXPECT_TRUE(
      contains(message, path_ + ": record 3 at byte offset " + std::to_string(bytes_.size())) &&
      contains(message, "'class' is a float_list, expected a int64_list"))
      << message;

  message =
      open_error(frame(example({{"image", int64_feature({1})}, {"class", int64_feature({0})}})));
  EXPECT_TRUE(contains(message, "'image' is a int64_list, expected a bytes_list")) << message;

  message = open_error(
      frame(example({{"image", bytes_feature({jpeg})}, {"class", int64_feature({1, 2})}})));
  EXPECT_TRUE(contains(message, "'class' holds 2 values, expected 1")) << message;

  message = open_error(frame("\xff\xff\xff not protobuf"));
  EXPECT_TRUE(contains(message, at_record(0)) && contains(message, "not a tf.train.Example"))
      << message;
}

TEST_F(TfRecordCorrupt, NegativeLabelGzipAndEmptyFiles) {
  const std::string jpeg = jpeg_of(test_image(8, 8));
  std::string message = open_error(
      frame(example({{"image", bytes_feature({jpeg})}, {"class", int64_feature({-1})}})));
  EXPECT_TRUE(contains(message, at_record(0)) && contains(message, "label -1")) << message;

  message = open_error(std::string("\x1f\x8b\x08\x00", 4) + std::string(20, '\0'));
  EXPECT_TRUE(contains(message, "gzip")) << message;

  message = open_error("");
  EXPECT_TRUE(contains(message, path_) && contains(message, "no records")) << message;
}

TEST_F(TfRecordCorrupt, ChangedAfterOpeningAndUndecodableImage) {
  write_bytes(path_, bytes_ + frame(flower("not a JPEG at all", 1)));
  const auto data = open_tfrecords(path_);
  ASSERT_EQ(data->size(), 4);
  std::string message = error_of<FormatError>([&] { data->image(3, {}); });
  EXPECT_TRUE(contains(message, path_ + "#3")) << message;

  // Same size, different bytes: the record's CRC catches it.
  std::string changed = bytes_;
  changed[offsets_[1] + 40] ^= 0x10;
  write_bytes(path_, changed + frame(flower("not a JPEG at all", 1)));
  message = error_of<FormatError>([&] { data->image(1, {}); });
  EXPECT_TRUE(contains(message, at_record(1)) && contains(message, "data CRC")) << message;
}

TEST(TfRecord, NothingMatches) {
  TempDir dir;
  std::string message = error_of<NotFound>([&] { open_tfrecords(dir / "*.tfrec"); });
  EXPECT_TRUE(contains(message, dir / "*.tfrec")) << message;
  message = error_of<NotFound>([&] { open_tfrecords(dir / "missing.tfrec"); });
  EXPECT_TRUE(contains(message, dir / "missing.tfrec")) << message;
  write_bytes(dir / "a.txt", "x");
  message = error_of<NotFound>([&] { open_tfrecords(dir.path().string()); });
  EXPECT_TRUE(contains(message, dir.path().string())) << message;
  EXPECT_THROW(open_tfrecords(dir / "a.txt", {"", "class", {}}), InvalidArgument);
}

}  // namespace
}  // namespace tlcore
