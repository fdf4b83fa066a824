// The data sources read files written here in their official layouts: an
// image folder, the same inside tar archives, CIFAR-10/100 binaries and IDX.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "data_fixtures.h"
#include "tlcore/data/sources.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

using namespace data_testing;

std::string png_of(const cv::Mat& bgr) {
  std::vector<std::uint8_t> buf;
  EXPECT_TRUE(cv::imencode(".png", bgr, buf));
  return std::string(buf.begin(), buf.end());
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---------------------------------------------------------------- image folder

// root/cat/{a.png, b.png, z.png, sub/c.png}, root/dog/x.BMP, plus files to skip.
// Image k is test_image(.., seed k) so each decoded sample can be recognised.
struct FolderLayout {
  std::vector<std::string> names = {"cat/a.png", "cat/b.png", "cat/z.png", "cat/sub/c.png",
                                    "dog/x.BMP"};
  std::vector<std::int64_t> labels = {0, 0, 0, 0, 1};

  cv::Mat image(std::size_t k) const {
    return test_image(20 + static_cast<int>(k), 12, static_cast<int>(k));
  }

  void write(const std::string& root) const {
    // Written out of order: the source must sort.
    for (std::size_t k = names.size(); k-- > 0;) {
      const std::string path = root + "/" + names[k];
      fs::create_directories(fs::path(path).parent_path());
      ASSERT_TRUE(cv::imwrite(path, image(k))) << path;
    }
    write_bytes(root + "/cat/.hidden.png", png_of(image(0)));
    write_bytes(root + "/cat/notes.txt", "not an image");
    write_bytes(root + "/.git/objects/x.png", png_of(image(0)));
    write_bytes(root + "/dog/.cache/y.png", png_of(image(0)));
    write_bytes(root + "/readme.txt", "outside every class");
  }
};

TEST(ImageFolder, ClassesOrderLabelsAndPixels) {
  TempDir dir;
  const std::string root = dir / "flowers";
  const FolderLayout layout;
  layout.write(root);
  // os.walk order as torchvision: a folder's files before its subfolders.
  ASSERT_EQ(layout.names[3], "cat/sub/c.png");

  ScanStats stats;
  const auto data = open_image_folder(root, &stats);
  EXPECT_EQ(data->classes(), (std::vector<std::string>{"cat", "dog"}));
  ASSERT_EQ(data->size(), 5);
  EXPECT_EQ(data->labels(), layout.labels);
  for (std::int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(data->source(i), root + "/" + layout.names[static_cast<std::size_t>(i)]);
    const cv::Mat expected = bgr_to_rgb(layout.image(static_cast<std::size_t>(i)));
    EXPECT_EQ(max_diff(data->image(i, {}), expected), 0) << i;
  }
  EXPECT_EQ(stats.hidden, 3);  // .hidden.png, .git, .cache
  EXPECT_EQ(stats.non_image, 1);
  EXPECT_EQ(stats.outside_classes, 1);
  EXPECT_THROW(data->image(5, {}), InvalidArgument);
  EXPECT_THROW(data->label(-1), InvalidArgument);
}

TEST(ImageFolder, SymlinkLoopEnds) {
  TempDir dir;
  const std::string root = dir / "root";
  write_bytes(root + "/cat/a.png", png_of(test_image(8, 8)));
  fs::create_directory_symlink(root + "/cat", root + "/cat/loop");
  const auto data = open_image_folder(root);
  EXPECT_EQ(data->size(), 1);  // the link leads back to cat/: not followed
}

TEST(ImageFolder, EmptyClassMissingRootAndNoImages) {
  TempDir dir;
  const std::string root = dir / "root";
  write_bytes(root + "/cat/a.png", png_of(test_image(8, 8)));
  write_bytes(root + "/empty/notes.txt", "no images here");
  std::string message = error_of<FormatError>([&] { open_image_folder(root); });
  EXPECT_TRUE(contains(message, root + "/empty")) << message;

  message = error_of<NotFound>([&] { open_image_folder(dir / "missing"); });
  EXPECT_TRUE(contains(message, dir / "missing")) << message;

  const std::string flat = dir / "flat";
  write_bytes(flat + "/a.png", png_of(test_image(8, 8)));
  message = error_of<FormatError>([&] { open_image_folder(flat); });
  EXPECT_TRUE(contains(message, flat)) << message;
}

TEST(ImageFolder, CorruptImageNamesItsFile) {
  TempDir dir;
  const std::string root = dir / "root";
  write_bytes(root + "/cat/bad.jpg", "text, not a JPEG");
  const auto data = open_image_folder(root);
  const std::string message = error_of<FormatError>([&] { data->image(0, {}); });
  EXPECT_TRUE(contains(message, root + "/cat/bad.jpg")) << message;
}

// ---------------------------------------------------------------- archives

std::vector<TarMember> archive_members(const FolderLayout& layout, const std::string& top) {
  std::vector<TarMember> members = {{top + "cat/", "", true}};
  if (!top.empty()) members.insert(members.begin(), {top, "", true});
  for (std::size_t k = layout.names.size(); k-- > 0;) {
    members.push_back({top + layout.names[k], png_of(layout.image(k))});
  }
  members.push_back({top + "cat/.DS_Store", "junk"});
  members.push_back({top + "cat/notes.txt", "not an image"});
  members.push_back({top + ".git/x.png", png_of(layout.image(0))});
  return members;
}

void expect_layout(const Dataset& data, const FolderLayout& layout, const std::string& path,
                   const std::string& top) {
  EXPECT_EQ(data.classes(), (std::vector<std::string>{"cat", "dog"}));
  ASSERT_EQ(data.size(), 5);
  EXPECT_EQ(data.labels(), layout.labels);
  for (std::int64_t i = 0; i < 5; ++i) {
    const auto k = static_cast<std::size_t>(i);
    EXPECT_EQ(data.source(i), path + ":" + top + layout.names[k]);
    EXPECT_EQ(max_diff(data.image(i, {}), bgr_to_rgb(layout.image(k))), 0) << i;
  }
}

TEST(ImageArchive, EveryCompressionAndSharedFoldersStripped) {
  TempDir dir;
  const FolderLayout layout;
  for (const std::string filter : {"", "gzip", "bzip2", "xz"}) {
    for (const std::string top : {"", "train/", "data/train/", "./train/"}) {
      const std::string path = dir / ("a" + filter + ".tar");
      write_tar(path, archive_members(layout, top), filter);
      ScanStats stats;
      const auto data = open_image_archive(path, &stats);
      SCOPED_TRACE(filter + " " + top);
      expect_layout(*data, layout, path, top);
      EXPECT_EQ(stats.hidden, 2);
      EXPECT_EQ(stats.non_image, 1);
      EXPECT_EQ(stats.outside_classes, 0);
    }
  }
}

TEST(ImageArchive, SingleClassKeepsItsFolder) {
  TempDir dir;
  const std::string path = dir / "one.tar.gz";
  write_tar(path,
            {{"train/cat/a.png", png_of(test_image(8, 8))},
             {"train/cat/b.png", png_of(test_image(8, 8))},
             {"loose.png", png_of(test_image(8, 8))}},
            "gzip");
  ScanStats stats;
  const auto data = open_image_archive(path, &stats);
  EXPECT_EQ(data->classes(), std::vector<std::string>{"cat"});
  EXPECT_EQ(data->size(), 2);
  EXPECT_EQ(stats.outside_classes, 1);
}

TEST(ImageArchive, LaterCopyOfAMemberWins) {
  TempDir dir;
  const std::string path = dir / "twice.tar";
  const cv::Mat second = test_image(9, 9, 5);
  write_tar(path, {{"cat/a.png", png_of(test_image(9, 9, 1))},
                   {"dog/b.png", png_of(test_image(9, 9, 2))},
                   {"cat/a.png", png_of(second)}});
  const auto data = open_image_archive(path);
  ASSERT_EQ(data->size(), 2);
  EXPECT_EQ(max_diff(data->image(0, {}), bgr_to_rgb(second)), 0);
}

TEST(ImageArchive, UnsafeMembersAreRejected) {
  TempDir dir;
  const std::string png = png_of(test_image(8, 8));
  for (const std::string bad :
       {"../evil.png", "train/../../evil.png", "/etc/evil.png", "train/cat/../../../x.txt"}) {
    const std::string path = dir / "bad.tar.gz";
    write_tar(path, {{"train/cat/a.png", png}, {bad, png}}, "gzip");
    const std::string message = error_of<FormatError>([&] { open_image_archive(path); });
    EXPECT_TRUE(contains(message, path)) << message;
    EXPECT_TRUE(contains(message, bad)) << message;
  }
}

TEST(ImageArchive, DamagedArchivesAreErrors) {
  TempDir dir;
  const FolderLayout layout;
  const std::string good = dir / "good.tar.gz";
  write_tar(good, archive_members(layout, "train/"), "gzip");
  const std::string bytes = read_bytes(good);

  const std::string truncated = dir / "truncated.tar.gz";
  write_bytes(truncated, bytes.substr(0, bytes.size() / 2));
  std::string message = error_of<FormatError>([&] { open_image_archive(truncated); });
  EXPECT_TRUE(contains(message, truncated)) << message;

  const std::string plain = dir / "plain.tar";
  write_tar(plain, archive_members(layout, "train/"));
  const std::string tar_bytes = read_bytes(plain);
  const std::string cut = dir / "cut.tar";
  write_bytes(cut, tar_bytes.substr(0, tar_bytes.find("\x89PNG") + 100));  // inside a member
  message = error_of<FormatError>([&] { open_image_archive(cut); });
  EXPECT_TRUE(contains(message, cut)) << message;

  const std::string text = dir / "text.tar.gz";
  write_bytes(text, "this is not an archive at all, just some text\n");
  message = error_of<FormatError>([&] { open_image_archive(text); });
  EXPECT_TRUE(contains(message, text)) << message;

  const std::string empty = dir / "empty.tar";
  write_bytes(empty, "");
  message = error_of<FormatError>([&] { open_image_archive(empty); });
  EXPECT_TRUE(contains(message, empty)) << message;

  EXPECT_THROW(open_image_archive(dir / "missing.tar"), NotFound);
}

TEST(ImageArchive, EmptyClassFolderIsAnError) {
  TempDir dir;
  const std::string path = dir / "empty_class.tar";
  write_tar(path, {{"train/cat/a.png", png_of(test_image(8, 8))},
                   {"train/dog/", "", true},
                   {"train/bird/readme.txt", "no images"}});
  const std::string message = error_of<FormatError>([&] { open_image_archive(path); });
  EXPECT_TRUE(contains(message, "train/bird") || contains(message, "train/dog")) << message;
}

// ---------------------------------------------------------------- CIFAR

// Record r of a file: pixel p of channel c is (r * 31 + c * 80 + p) % 256.
std::string cifar_records(const std::vector<std::vector<std::uint8_t>>& labels) {
  std::string out;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    for (std::uint8_t l : labels[r]) out += static_cast<char>(l);
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < 1024; ++p) out += static_cast<char>((r * 31 + c * 80 + p) % 256);
    }
  }
  return out;
}

void expect_cifar_pixels(const cv::Mat& rgb, std::size_t record) {
  ASSERT_EQ(rgb.type(), CV_8UC3);
  ASSERT_EQ(rgb.size(), cv::Size(32, 32));
  for (int y = 0; y < 32; ++y) {
    for (int x = 0; x < 32; ++x) {
      for (int c = 0; c < 3; ++c) {
        ASSERT_EQ(rgb.at<cv::Vec3b>(y, x)[c], (record * 31 + c * 80 + y * 32 + x) % 256)
            << record << " " << y << " " << x << " " << c;
      }
    }
  }
}

TEST(Cifar, TenTrainAndTestBatches) {
  TempDir dir;
  const std::string root = dir / "cifar-10-batches-bin";
  for (int b = 1; b <= 5; ++b) {
    write_bytes(root + "/data_batch_" + std::to_string(b) + ".bin",
                cifar_records({{static_cast<std::uint8_t>(b)}, {9}}));
  }
  write_bytes(root + "/test_batch.bin", cifar_records({{3}, {0}, {7}}));

  const auto train = open_cifar(root);
  ASSERT_EQ(train->size(), 10);
  EXPECT_EQ(train->labels(), (std::vector<std::int64_t>{1, 9, 2, 9, 3, 9, 4, 9, 5, 9}));
  EXPECT_EQ(train->classes()[0], "airplane");
  EXPECT_EQ(train->classes()[9], "truck");
  EXPECT_EQ(train->source(3), root + "/data_batch_2.bin#1");
  expect_cifar_pixels(train->image(3, {}), 1);
  expect_cifar_pixels(train->image(4, {}), 0);

  const cv::Mat gray = train->image(3, {1, 0});
  cv::Mat expected_gray;
  cv::cvtColor(train->image(3, {}), expected_gray, cv::COLOR_RGB2GRAY);
  EXPECT_EQ(max_diff(gray, expected_gray), 0);

  const auto test = open_cifar(root, false);
  EXPECT_EQ(test->labels(), (std::vector<std::int64_t>{3, 0, 7}));
  expect_cifar_pixels(test->image(2, {}), 2);

  // Names from batches.meta.txt when it is there; a single file opens too.
  std::string meta;
  for (int c = 0; c < 10; ++c) meta += "class" + std::to_string(c) + "\r\n";
  write_bytes(root + "/batches.meta.txt", meta + "\n");
  const auto named = open_cifar(root + "/test_batch.bin");
  EXPECT_EQ(named->size(), 3);
  EXPECT_EQ(named->classes()[7], "class7");

  EXPECT_THROW(open_cifar(root, true, CifarLabel::kCoarse), InvalidArgument);
}

TEST(Cifar, HundredFineAndCoarse) {
  TempDir dir;
  const std::string root = dir / "cifar-100-binary";
  write_bytes(root + "/train.bin", cifar_records({{19, 99}, {0, 0}, {4, 58}}));
  const auto fine = open_cifar(root);
  EXPECT_EQ(fine->labels(), (std::vector<std::int64_t>{99, 0, 58}));
  ASSERT_EQ(fine->classes().size(), 100u);
  EXPECT_EQ(fine->classes()[58], "pickup_truck");
  EXPECT_EQ(fine->classes()[99], "worm");
  expect_cifar_pixels(fine->image(2, {}), 2);

  const auto coarse = open_cifar(root, true, CifarLabel::kCoarse);
  EXPECT_EQ(coarse->labels(), (std::vector<std::int64_t>{19, 0, 4}));
  ASSERT_EQ(coarse->classes().size(), 20u);
  EXPECT_EQ(coarse->classes()[19], "vehicles_2");
  EXPECT_EQ(coarse->source(1), root + "/train.bin#1");

  EXPECT_THROW(open_cifar(root, false), NotFound);  // no test.bin
}

TEST(Cifar, BadFilesAreErrors) {
  TempDir dir;
  const std::string root = dir / "cifar-10-batches-bin";
  write_bytes(root + "/test_batch.bin", cifar_records({{1}, {2}}) + "extra");
  std::string message = error_of<FormatError>([&] { open_cifar(root, false); });
  EXPECT_TRUE(contains(message, root + "/test_batch.bin")) << message;
  EXPECT_TRUE(contains(message, "6151")) << message;

  write_bytes(root + "/test_batch.bin", cifar_records({{1}, {10}}));
  message = error_of<FormatError>([&] { open_cifar(root, false); });
  EXPECT_TRUE(contains(message, "test_batch.bin#1")) << message;
  EXPECT_TRUE(contains(message, "label 10")) << message;

  // Training needs all five batches.
  write_bytes(root + "/data_batch_1.bin", cifar_records({{1}}));
  message = error_of<NotFound>([&] { open_cifar(root); });
  EXPECT_TRUE(contains(message, "data_batch_2.bin")) << message;

  const std::string hundred = dir / "cifar-100-binary";
  write_bytes(hundred + "/test.bin", cifar_records({{20, 5}}));
  message = error_of<FormatError>([&] { open_cifar(hundred, false); });
  EXPECT_TRUE(contains(message, "label 20")) << message;

  EXPECT_THROW(open_cifar(dir / "nothing"), NotFound);
  write_bytes(dir / "other/readme.txt", "");
  EXPECT_THROW(open_cifar(dir / "other"), FormatError);
}

// ---------------------------------------------------------------- IDX

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// n images of h x w whose pixel (y, x) of image i is (i * 50 + y * w + x) % 256.
std::string idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w) {
  std::string out = be32(0x803) + be32(n) + be32(h) + be32(w);
  for (std::uint32_t i = 0; i < n; ++i) {
    for (std::uint32_t p = 0; p < h * w; ++p) out += static_cast<char>((i * 50 + p) % 256);
  }
  return out;
}

std::string idx_labels(const std::vector<std::uint8_t>& labels) {
  std::string out = be32(0x801) + be32(static_cast<std::uint32_t>(labels.size()));
  for (std::uint8_t l : labels) out += static_cast<char>(l);
  return out;
}

TEST(Idx, PlainAndGzipped) {
  TempDir dir;
  write_bytes(dir / "images", idx_images(3, 4, 5));
  write_bytes(dir / "labels", idx_labels({2, 0, 1}));
  write_gzip(dir / "images.gz", idx_images(3, 4, 5));
  write_gzip(dir / "labels.gz", idx_labels({2, 0, 1}));

  for (const std::string suffix : {"", ".gz"}) {
    const auto data = open_idx(dir / ("images" + suffix), dir / ("labels" + suffix));
    ASSERT_EQ(data->size(), 3);
    EXPECT_EQ(data->labels(), (std::vector<std::int64_t>{2, 0, 1}));
    EXPECT_EQ(data->classes(), (std::vector<std::string>{"0", "1", "2"}));
    EXPECT_EQ(data->source(2), dir / ("images" + suffix) + "#2");
    const cv::Mat gray = data->image(2, {1, 0});
    const cv::Mat rgb = data->image(2, {});
    ASSERT_EQ(gray.type(), CV_8UC1);
    ASSERT_EQ(rgb.type(), CV_8UC3);
    ASSERT_EQ(gray.size(), cv::Size(5, 4));
    for (int y = 0; y < 4; ++y) {
      for (int x = 0; x < 5; ++x) {
        const auto v = static_cast<std::uint8_t>((2 * 50 + y * 5 + x) % 256);
        EXPECT_EQ(gray.at<std::uint8_t>(y, x), v);
        EXPECT_EQ(rgb.at<cv::Vec3b>(y, x), cv::Vec3b(v, v, v));
      }
    }
  }
  const auto named = open_idx(dir / "images", dir / "labels", {"a", "b", "c", "d"});
  EXPECT_EQ(named->classes().size(), 4u);
  EXPECT_THROW(open_idx(dir / "images", dir / "labels", {"a", "b"}), FormatError);
}

TEST(Idx, BadFilesAreErrors) {
  TempDir dir;
  const std::string images = dir / "images";
  const std::string labels = dir / "labels";
  write_bytes(labels, idx_labels({1, 2, 3}));

  write_bytes(images, idx_labels({1, 2, 3}));  // a labels file where images belong
  std::string message = error_of<FormatError>([&] { open_idx(images, labels); });
  EXPECT_TRUE(contains(message, images) && contains(message, "magic")) << message;

  const std::string full = idx_images(3, 4, 4);
  write_bytes(images, full.substr(0, full.size() - 1));
  message = error_of<FormatError>([&] { open_idx(images, labels); });
  EXPECT_TRUE(contains(message, images) && contains(message, "truncated")) << message;

  write_bytes(images, idx_images(2, 4, 4));
  message = error_of<FormatError>([&] { open_idx(images, labels); });
  EXPECT_TRUE(contains(message, images) && contains(message, labels)) << message;

  write_bytes(images, std::string("\x00\x00\x08", 3));
  message = error_of<FormatError>([&] { open_idx(images, labels); });
  EXPECT_TRUE(contains(message, images) && contains(message, "too short")) << message;

  write_gzip(dir / "images.gz", idx_images(3, 4, 4));
  const std::string gz = read_bytes(dir / "images.gz");
  write_bytes(images, gz.substr(0, gz.size() - 10));
  message = error_of<FormatError>([&] { open_idx(images, labels); });
  EXPECT_TRUE(contains(message, images) && contains(message, "gzip")) << message;

  EXPECT_THROW(open_idx(dir / "missing", labels), NotFound);
}

TEST(Idx, FashionMnist) {
  const std::string root = "/usr/share/datasets/fashion-mnist/";
  if (!fs::exists(root + "train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  }
  for (const auto& [prefix, count] :
       {std::pair<std::string, int>{"train", 60000}, {"t10k", 10000}}) {
    const std::string images = root + prefix + "-images-idx3-ubyte.gz";
    const auto data = open_idx(images, root + prefix + "-labels-idx1-ubyte.gz");
    ASSERT_EQ(data->size(), count);
    std::map<std::int64_t, int> per_class;
    for (std::int64_t l : data->labels()) ++per_class[l];
    ASSERT_EQ(per_class.size(), 10u);
    for (const auto& [label, n] : per_class) EXPECT_EQ(n, count / 10) << label;

    // The last image against zlib's own reading of the file.
    gzFile f = gzopen(images.c_str(), "rb");
    ASSERT_NE(f, nullptr);
    std::string raw(16 + static_cast<std::size_t>(count) * 784, '\0');
    ASSERT_EQ(gzread(f, raw.data(), static_cast<unsigned>(raw.size())),
              static_cast<int>(raw.size()));
    gzclose(f);
    const cv::Mat last = data->image(count - 1, {1, 0});
    ASSERT_EQ(last.size(), cv::Size(28, 28));
    EXPECT_EQ(std::memcmp(last.data, raw.data() + raw.size() - 784, 784), 0);
  }
}

}  // namespace
}  // namespace tlcore
