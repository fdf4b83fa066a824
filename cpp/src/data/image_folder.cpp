// root/<class>/<image>, as torchvision's ImageFolder: sorted class folders,
// images found recursively (symlinked folders followed) in os.walk order.
#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "internal/checks.h"
#include "internal/file_io.h"
#include "tlcore/data/sources.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

namespace fs = std::filesystem;

class ImageFolder final : public Dataset {
 public:
  ImageFolder(std::vector<std::string> classes, std::vector<std::string> paths,
              std::vector<std::int64_t> labels)
      : classes_(std::move(classes)), paths_(std::move(paths)), labels_(std::move(labels)) {}

  std::int64_t size() const override { return static_cast<std::int64_t>(paths_.size()); }

  std::int64_t label(std::int64_t index) const override {
    internal::check_index(index, size());
    return labels_[static_cast<std::size_t>(index)];
  }

  const std::vector<std::string>& classes() const override { return classes_; }

  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override {
    internal::check_index(index, size());
    return read_image(paths_[static_cast<std::size_t>(index)], options);
  }

  std::vector<std::uint8_t> encoded(std::int64_t index) const override {
    return internal::read_file(source(index));
  }

  std::string source(std::int64_t index) const override {
    internal::check_index(index, size());
    return paths_[static_cast<std::size_t>(index)];
  }

 private:
  std::vector<std::string> classes_;
  std::vector<std::string> paths_;
  std::vector<std::int64_t> labels_;
};

struct Found {
  std::string dir;
  std::string name;
};

[[noreturn]] void throw_fs(const fs::path& path, const std::error_code& ec) {
  throw Error(path.string() + ": cannot list folder: " + ec.message());
}

// Lists `dir`, calling on_dir / on_file for every entry that is not hidden.
template <typename OnDir, typename OnFile>
void list_folder(const fs::path& dir, ScanStats& stats, OnDir on_dir, OnFile on_file) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    std::string name = entry.path().filename().string();
    if (internal::is_hidden(name)) {
      ++stats.hidden;
      continue;
    }
    std::error_code status_ec;  // a dangling link is neither folder nor file
    if (entry.is_directory(status_ec)) {
      on_dir(entry.path(), std::move(name));
    } else {
      on_file(entry.is_regular_file(status_ec), std::move(name));
    }
  }
  if (ec) throw_fs(dir, ec);
}

// `ancestors` holds the canonical paths above `dir`: a symlink back to one of
// them would make the walk endless, so it is not followed.
void scan_class(const fs::path& dir, std::vector<fs::path>& ancestors, std::vector<Found>& found,
                ScanStats& stats) {
  std::error_code ec;
  fs::path canonical = fs::canonical(dir, ec);
  if (ec) throw_fs(dir, ec);
  if (std::find(ancestors.begin(), ancestors.end(), canonical) != ancestors.end()) return;
  ancestors.push_back(std::move(canonical));

  std::vector<fs::path> subdirs;
  const std::string dir_string = dir.string();
  list_folder(
      dir, stats, [&](const fs::path& sub, std::string) { subdirs.push_back(sub); },
      [&](bool regular, std::string name) {
        // Only regular files: reading a FIFO with a .jpg name would block.
        if (regular && has_image_extension(name)) {
          found.push_back({dir_string, std::move(name)});
        } else {
          ++stats.non_image;
        }
      });
  for (const fs::path& sub : subdirs) scan_class(sub, ancestors, found, stats);
  ancestors.pop_back();
}

}  // namespace

std::shared_ptr<Dataset> open_image_folder(const std::string& root, ScanStats* stats) {
  std::error_code ec;
  const fs::file_status status = fs::status(root, ec);
  if (!fs::exists(status)) throw NotFound(root + ": no such folder");
  if (!fs::is_directory(status)) throw InvalidArgument(root + ": not a folder");

  ScanStats local;
  std::vector<std::pair<std::string, fs::path>> class_dirs;
  list_folder(
      root, local,
      [&](const fs::path& dir, std::string name) { class_dirs.emplace_back(std::move(name), dir); },
      [&](bool, std::string) { ++local.outside_classes; });
  std::sort(class_dirs.begin(), class_dirs.end());

  std::vector<std::string> classes;
  std::vector<std::string> paths;
  std::vector<std::int64_t> labels;
  for (const auto& [name, dir] : class_dirs) {
    std::vector<Found> found;
    std::vector<fs::path> ancestors;
    scan_class(dir, ancestors, found, local);
    if (found.empty()) {
      throw FormatError(dir.string() +
                        ": class folder holds no images (.jpg .jpeg .png .bmp .webp)");
    }
    // os.walk order, as torchvision: folder by folder (sorted by path), files sorted within.
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
      return a.dir != b.dir ? a.dir < b.dir : a.name < b.name;
    });
    const auto label = static_cast<std::int64_t>(classes.size());
    for (const Found& f : found) {
      paths.push_back(f.dir + "/" + f.name);
      labels.push_back(label);
    }
    classes.push_back(name);
  }
  if (classes.empty()) {
    throw FormatError(root + ": no class folders with images (expected root/<class>/<image>)");
  }
  if (stats) *stats = local;
  return std::make_shared<ImageFolder>(std::move(classes), std::move(paths), std::move(labels));
}

}  // namespace tlcore
