#include "internal/archive_stream.h"

#ifdef TLCORE_HAVE_LIBARCHIVE
#include <archive.h>
#include <archive_entry.h>
#endif

#include <cstring>
#include <utility>

#include "internal/file_pool.h"
#include "tlcore/error.h"

namespace tlcore::internal {

std::string compression_of(const std::string& path) {
  const Fd fd = open_regular_file(path);
  std::uint8_t magic[6] = {};
  const std::size_t n = pread_fully(fd.get(), path, 0, magic, sizeof magic);
  if (n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) return "gzip";
  if (n >= 3 && std::memcmp(magic, "BZh", 3) == 0) return "bzip2";
  if (n >= 6 && std::memcmp(magic, "\xfd\x37\x7a\x58\x5a\x00", 6) == 0) return "xz";
  if (n >= 4 && std::memcmp(magic, "\x28\xb5\x2f\xfd", 4) == 0) return "zstd";
  return "";
}

#ifdef TLCORE_HAVE_LIBARCHIVE

namespace {

struct ArchiveFree {
  void operator()(archive* a) const { archive_read_free(a); }
};

std::string error_text(archive* a) {
  const char* message = archive_error_string(a);
  return message ? message : "unknown libarchive error";
}

}  // namespace

struct ArchiveStream::Impl {
  explicit Impl(Fd file) : fd(std::move(file)) {}
  Fd fd;
  std::unique_ptr<archive, ArchiveFree> reader;
  archive_entry* entry = nullptr;
  std::string name;  // the current member's
  std::uint64_t ordinal = 0;
};

ArchiveStream::ArchiveStream(const std::string& path, std::size_t block_size)
    // Opened here, not by libarchive: a FIFO or a device is refused rather than read forever.
    : path_(path), impl_(std::make_unique<Impl>(open_regular_file(path))) {
  impl_->reader.reset(archive_read_new());
  archive* a = impl_->reader.get();
  if (!a) throw Error(path + ": libarchive could not allocate a reader");
  archive_read_support_filter_all(a);
  archive_read_support_format_tar(a);
  if (archive_read_open_fd(a, impl_->fd.get(), block_size) != ARCHIVE_OK) {
    throw FormatError(path + ": cannot open archive (" + error_text(a) + ")");
  }
}

ArchiveStream::~ArchiveStream() = default;

bool ArchiveStream::next(TarMember* member) {
  archive* a = impl_->reader.get();
  if (impl_->entry) ++impl_->ordinal;
  const int r = archive_read_next_header(a, &impl_->entry);
  if (r == ARCHIVE_EOF) {
    impl_->entry = nullptr;
    return false;
  }
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
    impl_->entry = nullptr;
    throw FormatError(path_ + ": not a tar archive, or truncated or corrupt (" + error_text(a) +
                      ")");
  }
  const char* name = archive_entry_pathname(impl_->entry);
  if (!name || !*name) throw FormatError(path_ + ": member without a name");
  impl_->name = name;
  member->name = name;
  member->header = member->data = impl_->ordinal;
  member->size = archive_entry_size_is_set(impl_->entry)
                     ? static_cast<std::uint64_t>(archive_entry_size(impl_->entry))
                     : 0;
  // Hard links carry no data of their own; they are skipped like other links.
  member->regular = archive_entry_filetype(impl_->entry) == AE_IFREG &&
                    archive_entry_hardlink(impl_->entry) == nullptr;
  member->directory = archive_entry_filetype(impl_->entry) == AE_IFDIR;
  return true;
}

void ArchiveStream::read(std::vector<std::uint8_t>& out, std::uint64_t limit) {
  archive* a = impl_->reader.get();
  const std::string where = path_ + ":" + impl_->name;
  const std::size_t start = out.size();
  for (;;) {
    const void* block = nullptr;
    std::size_t length = 0;
    la_int64_t offset = 0;
    const int r = archive_read_data_block(a, &block, &length, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) {
      throw FormatError(where + ": truncated or corrupt archive (" + error_text(a) + ")");
    }
    if (offset < 0 || start + static_cast<std::uint64_t>(offset) < out.size()) {
      throw FormatError(where + ": member data out of order");
    }
    if (static_cast<std::uint64_t>(offset) + length > limit) {
      throw FormatError(where + ": member larger than " + std::to_string(limit) + " bytes");
    }
    out.resize(start + static_cast<std::size_t>(offset));  // zeros for a sparse hole
    const auto* data = static_cast<const std::uint8_t*>(block);
    out.insert(out.end(), data, data + length);
  }
  const std::uint64_t got = out.size() - start;
  if (impl_->entry && archive_entry_size_is_set(impl_->entry) &&
      got != static_cast<std::uint64_t>(archive_entry_size(impl_->entry))) {
    throw FormatError(where + ": member truncated (" + std::to_string(got) + " of " +
                      std::to_string(archive_entry_size(impl_->entry)) + " bytes)");
  }
}

bool ArchiveStream::compressed() const {
  return archive_filter_code(impl_->reader.get(), 0) != ARCHIVE_FILTER_NONE;
}

#else

struct ArchiveStream::Impl {};

ArchiveStream::ArchiveStream(const std::string& path, std::size_t) : path_(path) {
  throw Unsupported(path +
                    ": this tlcore was built without libarchive, so it reads no compressed tar "
                    "archives (on Debian: apt-get install libarchive-dev, then rebuild)");
}

ArchiveStream::~ArchiveStream() = default;
bool ArchiveStream::next(TarMember*) { return false; }
void ArchiveStream::read(std::vector<std::uint8_t>&, std::uint64_t) {}
bool ArchiveStream::compressed() const { return false; }

#endif

}  // namespace tlcore::internal
