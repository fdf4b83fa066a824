// The image-folder layout inside a tar archive (any compression libarchive
// reads). Members are read once into one contiguous buffer; nothing touches disk.
#include <algorithm>
#include <limits>
#include <memory>
#include <new>
#include <tuple>
#include <utility>

#include "internal/archive_stream.h"
#include "internal/checks.h"
#include "internal/file_io.h"
#include "tlcore/data/sources.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

struct Member {
  std::uint64_t offset;
  std::uint64_t size;
  std::int64_t label;
  std::string name;  // as written in the archive, for messages
};

class ImageArchive final : public Dataset {
 public:
  ImageArchive(std::string path, std::vector<std::string> classes, std::vector<std::uint8_t> bytes,
               std::vector<Member> members)
      : path_(std::move(path)),
        classes_(std::move(classes)),
        bytes_(std::move(bytes)),
        members_(std::move(members)) {}

  std::int64_t size() const override { return static_cast<std::int64_t>(members_.size()); }

  std::int64_t label(std::int64_t index) const override { return member(index).label; }

  const std::vector<std::string>& classes() const override { return classes_; }

  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override {
    const Member& m = member(index);
    return decode_image(bytes_.data() + m.offset, m.size, options, path_ + ":" + m.name);
  }

  std::vector<std::uint8_t> encoded(std::int64_t index) const override {
    const Member& m = member(index);
    const auto* start = bytes_.data() + m.offset;
    return {start, start + m.size};
  }

  std::string source(std::int64_t index) const override { return path_ + ":" + member(index).name; }

 private:
  const Member& member(std::int64_t index) const {
    internal::check_index(index, size());
    return members_[static_cast<std::size_t>(index)];
  }

  std::string path_;
  std::vector<std::string> classes_;
  std::vector<std::uint8_t> bytes_;
  std::vector<Member> members_;
};

struct Candidate {
  std::vector<std::string> parts;  // path components, without "" and "."
  std::string name;
  std::uint64_t offset;
  std::uint64_t size;
};

std::string join(std::vector<std::string>::const_iterator first,
                 std::vector<std::string>::const_iterator last) {
  std::string out;
  for (auto it = first; it != last; ++it) {
    if (!out.empty()) out += '/';
    out += *it;
  }
  return out;
}

// Everything read from the archive before the layout is worked out.
struct Scan {
  std::vector<std::uint8_t> bytes;
  std::vector<Candidate> images;
  std::vector<std::vector<std::string>> folders;  // folder entries and folders of other files
  ScanStats stats;
};

// Growing the buffer copies it: reserve what the members likely hold. A plain
// tar holds less than its size; gzip shrinks the shared JPEG headers of small
// images about threefold (CIFAR: 16 MB for 46 MB). Untouched pages cost nothing.
void reserve_for(bool compressed, std::size_t archive_size, std::vector<std::uint8_t>& bytes) {
  if (!compressed) {
    bytes.reserve(archive_size);
    return;
  }
  try {
    bytes.reserve(archive_size * 4);
  } catch (const std::bad_alloc&) {
    bytes.reserve(archive_size);
  }
}

Scan scan_archive(const std::string& path) {
  Scan scan;
  const auto archive_size = static_cast<std::size_t>(internal::file_size(path));
  internal::ArchiveStream stream(path);
  reserve_for(stream.compressed(), archive_size, scan.bytes);
  internal::TarMember member;
  while (stream.next(&member)) {
    const std::string& name = member.name;
    if (name.front() == '/') {
      throw FormatError(path + ": member '" + name + "' has an absolute path");
    }
    std::vector<std::string> parts = internal::split_path(name);
    if (std::find(parts.begin(), parts.end(), "..") != parts.end()) {
      throw FormatError(path + ": member '" + name + "' has a '..' component");
    }
    if (parts.empty()) continue;
    if (std::any_of(parts.begin(), parts.end(), internal::is_hidden)) {
      ++scan.stats.hidden;
      continue;
    }
    if (member.directory) {
      scan.folders.push_back(std::move(parts));
      continue;
    }
    if (!member.regular || !has_image_extension(parts.back())) {
      ++scan.stats.non_image;
      if (parts.size() > 1) {
        parts.pop_back();
        scan.folders.push_back(std::move(parts));
      }
      continue;
    }
    if (parts.size() == 1) {
      ++scan.stats.outside_classes;
      continue;
    }
    const std::uint64_t offset = scan.bytes.size();
    stream.read(scan.bytes, std::numeric_limits<std::uint64_t>::max());
    const std::uint64_t size = scan.bytes.size() - offset;
    scan.images.push_back({std::move(parts), std::move(name), offset, size});
  }
  return scan;
}

}  // namespace

std::shared_ptr<Dataset> open_image_archive(const std::string& path, ScanStats* stats) {
  Scan scan = scan_archive(path);
  if (scan.images.empty()) {
    throw FormatError(path + ": no images in <class>/<image> folders in the archive");
  }

  // Folders shared by every image (e.g. "train/") are skipped, but at least
  // one folder is kept: it names the class.
  std::vector<std::string> prefix = scan.images.front().parts;
  prefix.pop_back();
  std::size_t min_folders = std::numeric_limits<std::size_t>::max();
  for (const Candidate& c : scan.images) {
    const std::size_t folders = c.parts.size() - 1;
    min_folders = std::min(min_folders, folders);
    const auto mismatch = std::mismatch(prefix.begin(), prefix.end(), c.parts.begin(),
                                        c.parts.begin() + static_cast<std::ptrdiff_t>(folders));
    prefix.erase(mismatch.first, prefix.end());
  }
  const std::size_t strip = std::min(prefix.size(), min_folders - 1);
  prefix.resize(strip);

  std::vector<std::string> classes;
  for (const Candidate& c : scan.images) classes.push_back(c.parts[strip]);
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());

  for (const std::vector<std::string>& folder : scan.folders) {
    if (folder.size() <= strip || !std::equal(prefix.begin(), prefix.end(), folder.begin())) {
      continue;
    }
    if (!std::binary_search(classes.begin(), classes.end(), folder[strip])) {
      throw FormatError(
          path + ": class folder '" +
          join(folder.begin(), folder.begin() + static_cast<std::ptrdiff_t>(strip) + 1) +
          "' holds no images (.jpg .jpeg .png .bmp .webp)");
    }
  }

  struct Key {
    std::int64_t label;
    std::string dir;
    std::string file;
    std::size_t order;
  };
  std::vector<Key> keys;
  keys.reserve(scan.images.size());
  for (std::size_t i = 0; i < scan.images.size(); ++i) {
    const std::vector<std::string>& parts = scan.images[i].parts;
    const auto label =
        std::lower_bound(classes.begin(), classes.end(), parts[strip]) - classes.begin();
    keys.push_back({label,
                    join(parts.begin() + static_cast<std::ptrdiff_t>(strip), parts.end() - 1),
                    parts.back(), i});
  }
  // os.walk order within a class, as the folder source; for a member stored
  // twice (tar -r), the later copy wins, as when extracting.
  std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return std::tie(a.label, a.dir, a.file, a.order) < std::tie(b.label, b.dir, b.file, b.order);
  });
  std::vector<Member> members;
  members.reserve(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const Key& k = keys[i];
    if (i + 1 < keys.size() && keys[i + 1].label == k.label && keys[i + 1].dir == k.dir &&
        keys[i + 1].file == k.file) {
      continue;
    }
    Candidate& c = scan.images[k.order];
    members.push_back({c.offset, c.size, k.label, std::move(c.name)});
  }

  if (stats) *stats = scan.stats;
  return std::make_shared<ImageArchive>(path, std::move(classes), std::move(scan.bytes),
                                        std::move(members));
}

}  // namespace tlcore
