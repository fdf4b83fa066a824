#include "internal/index_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "internal/crc32c.h"
#include "internal/file_io.h"
#include "internal/file_pool.h"
#include "tlcore/error.h"

namespace tlcore::internal {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'T', 'L', 'C', 'I', 'N', 'D', 'E', 'X'};
constexpr std::uint64_t kVersion = 1;
// An index larger than this is damaged: a shard of 2^40 bytes holds far fewer members.
constexpr std::uint64_t kMaxPayload = std::uint64_t{1} << 34;

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

}  // namespace

std::string cache_root() {
  if (const char* dir = std::getenv("TLCORE_CACHE_DIR"); dir && *dir) return dir;
  if (const char* dir = std::getenv("XDG_CACHE_HOME"); dir && *dir) {
    return (fs::path(dir) / "tlcore").string();
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return (fs::path(home) / ".cache" / "tlcore").string();
  }
  return (fs::temp_directory_path() / "tlcore-cache").string();
}

namespace {

std::vector<std::uint8_t> header(const FileStamp& stamp, const std::string& key,
                                 std::uint64_t payload_size) {
  IndexWriter w;
  for (const char c : kMagic) w.u8(static_cast<std::uint8_t>(c));
  w.u64(kVersion);
  w.u64(stamp.size);
  w.u64(static_cast<std::uint64_t>(stamp.mtime_ns));
  w.u64(static_cast<std::uint64_t>(stamp.ctime_ns));
  w.u64(stamp.inode);
  w.text(key);
  w.u64(payload_size);
  return std::move(w.bytes());
}

}  // namespace

void IndexWriter::u64(std::uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void IndexWriter::text(const std::string& s) {
  u64(s.size());
  bytes_.insert(bytes_.end(), s.begin(), s.end());
}

void IndexReader::need(std::size_t n) const {
  if (n > bytes_.size() - pos_) throw FormatError("index ends early");
}

std::uint8_t IndexReader::u8() {
  need(1);
  return bytes_[pos_++];
}

std::uint64_t IndexReader::u64() {
  need(8);
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | bytes_[pos_ + static_cast<std::size_t>(i)];
  pos_ += 8;
  return v;
}

std::string IndexReader::text() {
  const std::uint64_t n = u64();
  if (n > bytes_.size() - pos_) throw FormatError("index ends early");
  std::string s(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
  pos_ += static_cast<std::size_t>(n);
  return s;
}

FileStamp file_stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno(path, errno, "stat");
  if (!S_ISREG(st.st_mode)) throw InvalidArgument(path + ": not a regular file");
  const auto ns = [](const timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
  };
  return {static_cast<std::uint64_t>(st.st_size), ns(st.st_mtim), ns(st.st_ctim),
          static_cast<std::uint64_t>(st.st_ino)};
}

std::string index_path(const std::string& shard, const std::string& index_dir,
                       const std::string& kind) {
  std::error_code ec;
  fs::path absolute = fs::absolute(shard, ec);
  if (ec) absolute = shard;
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx",
                static_cast<unsigned long long>(fnv1a(absolute.lexically_normal().string())));
  const std::string base = fs::path(shard).filename().string().substr(0, 100);
  const fs::path dir = index_dir.empty() ? fs::path(cache_root()) / "index" : fs::path(index_dir);
  return (dir / (std::string(hash) + "-" + base + "." + kind + "idx")).string();
}

std::optional<std::vector<std::uint8_t>> load_index(const std::string& path, const FileStamp& stamp,
                                                    const std::string& key) {
  std::vector<std::uint8_t> bytes;
  try {
    bytes = read_file(path);
  } catch (const Error&) {
    return std::nullopt;
  }
  const std::vector<std::uint8_t> expected = header(stamp, key, 0);
  const std::size_t fixed = expected.size() - 8;  // all but the payload size
  if (bytes.size() < expected.size() + 4 ||
      !std::equal(expected.begin(), expected.begin() + static_cast<std::ptrdiff_t>(fixed),
                  bytes.begin())) {
    return std::nullopt;
  }
  std::uint64_t payload_size = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    payload_size |= static_cast<std::uint64_t>(bytes[fixed + i]) << (8 * i);
  }
  if (payload_size > kMaxPayload || bytes.size() != expected.size() + payload_size + 4) {
    return std::nullopt;
  }
  std::vector<std::uint8_t> payload(bytes.begin() + static_cast<std::ptrdiff_t>(expected.size()),
                                    bytes.end() - 4);
  std::uint32_t crc = 0;
  for (int i = 3; i >= 0; --i)
    crc = crc << 8 | bytes[bytes.size() - 4 + static_cast<std::size_t>(i)];
  if (crc32c(payload.data(), payload.size()) != crc) return std::nullopt;
  return payload;
}

bool save_index(const std::string& path, const FileStamp& stamp, const std::string& key,
                const std::vector<std::uint8_t>& payload) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::vector<std::uint8_t> bytes = header(stamp, key, payload.size());
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  const std::uint32_t crc = crc32c(payload.data(), payload.size());
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<std::uint8_t>(crc >> (8 * i)));

  // A name of its own per writer: several ranks or threads may index one shard
  // at once. Created 0666 so that the umask decides, like any file a user makes.
  static std::atomic<std::uint64_t> counter{0};
  const std::string temp =
      path + ".tmp" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
  if (fd.get() < 0) return false;
  bool ok = true;
  std::size_t written = 0;
  while (ok && written < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<std::size_t>(n);
  }
  if (ok) ok = ::rename(temp.c_str(), path.c_str()) == 0;
  if (!ok) ::unlink(temp.c_str());
  return ok;
}

}  // namespace tlcore::internal
