// The data sources: a folder of class folders, the same inside a tar archive,
// CIFAR-10/100 binaries and MNIST-style IDX files.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tlcore/data/dataset.h"

namespace tlcore {

// What a directory or archive scan passed over.
struct ScanStats {
  std::int64_t hidden = 0;           // names starting with '.'
  std::int64_t non_image = 0;        // files without an image extension (and links, devices)
  std::int64_t outside_classes = 0;  // files directly under the root, in no class folder
};

// root/<class>/<image>: classes sorted by name (as torchvision's ImageFolder),
// images found recursively below each class folder and sorted by path.
// Throws NotFound for a missing root, FormatError for a root without images or
// an empty class folder (naming it).
std::shared_ptr<Dataset> open_image_folder(const std::string& root, ScanStats* stats = nullptr);

// The image-folder layout inside a .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz,
// read in place (members are held in memory, never extracted to disk). Leading
// folders shared by every member (e.g. "train/") are skipped. Members with an
// absolute path or a ".." component are rejected with FormatError.
std::shared_ptr<Dataset> open_image_archive(const std::string& path, ScanStats* stats = nullptr);

enum class CifarLabel { kFine, kCoarse };

// CIFAR-10 or CIFAR-100 binary version. `path` is the extracted folder
// (cifar-10-batches-bin or cifar-100-binary) or one .bin file. train selects
// data_batch_1..5.bin / train.bin, otherwise test_batch.bin / test.bin.
// The variant is recognised by the files present. Class names come from
// batches.meta.txt / fine_label_names.txt / coarse_label_names.txt when present.
std::shared_ptr<Dataset> open_cifar(const std::string& path, bool train = true,
                                    CifarLabel label = CifarLabel::kFine);

// MNIST-style IDX: an images file (magic 0x00000803, uint8 N x H x W) and a
// labels file (0x00000801, uint8 N), each optionally gzipped. class_names may
// be empty ("0".."K-1" are used).
std::shared_ptr<Dataset> open_idx(const std::string& images_path, const std::string& labels_path,
                                  std::vector<std::string> class_names = {});

}  // namespace tlcore
