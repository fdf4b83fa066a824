#include "row_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <nlohmann/json.hpp>

#include "tlcore/error.h"

namespace tlcore::detail {
namespace {

constexpr char kMagic[8] = {'T', 'L', 'C', 'R', 'O', 'W', 'S', '1'};
constexpr std::uint64_t kHeaderBytes = 1 << 16;
constexpr std::uint64_t kAlign = 4096;

std::uint64_t aligned(std::uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string dtype_name(torch::ScalarType t) {
  if (t == torch::kFloat) return "float32";
  if (t == torch::kBFloat16) return "bfloat16";
  if (t == torch::kHalf) return "float16";
  throw InvalidArgument("feature rows cannot be stored as " + std::string(c10::toString(t)));
}

torch::ScalarType dtype_of(const std::string& name) {
  if (name == "float32") return torch::kFloat;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  throw FormatError("unknown dtype '" + name + "'");
}

std::int64_t row_numel(const RowLayout& layout) {
  std::int64_t n = 1;
  for (const std::int64_t d : layout.row_shape) n *= d;
  return n;
}

[[noreturn]] void fail(const std::string& path, const char* what) {
  throw Error(path + ": cannot " + what + ": " +
              std::error_code(errno, std::generic_category()).message());
}

// Owns a descriptor until the mapping holds the file.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::uint64_t RowFile::block_offset(int block) const {
  const auto rows = static_cast<std::uint64_t>(layout_.capacity);
  const std::uint64_t row_bytes =
      static_cast<std::uint64_t>(row_numel(layout_)) * torch::elementSize(layout_.dtype);
  const std::uint64_t sizes[4] = {aligned(rows * row_bytes),
                                  layout_.flip ? aligned(rows * row_bytes) : 0, aligned(rows * 8),
                                  aligned(rows * 8)};
  std::uint64_t offset = kHeaderBytes;
  for (int b = 0; b < block; ++b) offset += sizes[b];
  return offset;
}

void RowFile::map(int fd, bool writable) {
  // Written files are shared with the page cache; read ones are private copies on
  // write, so no stray write could change a file another run relies on.
  void* p =
      ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, writable ? MAP_SHARED : MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) fail(writable ? temp_ : path_, "map");
  data_ = static_cast<std::uint8_t*>(p);
}

RowFile::RowFile(std::string path, const RowLayout& layout)
    : path_(std::move(path)), layout_(layout) {
  dtype_name(layout.dtype);
  size_ = block_offset(4);
  static std::atomic<std::uint64_t> counter{0};
  temp_ = path_ + ".tmp" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
  FdCloser fd{::open(temp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666)};
  if (fd.fd < 0) fail(temp_, "create the feature cache file");
  // posix_fallocate reserves the blocks now: a full disk fails here, with a message,
  // instead of as a SIGBUS when a page of the mapping is first written.
  if (const int err = ::posix_fallocate(fd.fd, 0, static_cast<off_t>(size_)); err != 0) {
    ::unlink(temp_.c_str());
    errno = err;
    fail(temp_, ("reserve " + std::to_string(size_ >> 20) + " MiB for the feature cache").c_str());
  }
  map(fd.fd, true);
}

std::unique_ptr<RowFile> RowFile::open(const std::string& path, const std::string& fingerprint,
                                       std::string* why) {
  why->clear();
  FdCloser fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) return nullptr;
  std::unique_ptr<RowFile> file(new RowFile());
  file->path_ = path;
  try {
    std::vector<char> header(kHeaderBytes);
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0 ||
        ::pread(fd.fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size()) ||
        std::memcmp(header.data(), kMagic, 8) != 0) {
      throw FormatError("not a complete tlcore feature cache");
    }
    std::uint64_t length = 0;
    std::memcpy(&length, header.data() + 8, 8);
    if (length > kHeaderBytes - 16) throw FormatError("damaged header");
    const auto meta = nlohmann::json::parse(
        header.begin() + 16, header.begin() + 16 + static_cast<std::ptrdiff_t>(length));
    if (meta.at("fingerprint").get<std::string>() != fingerprint) {
      *why = "made by another model, data, pipeline or options";
      return nullptr;
    }
    file->layout_.row_shape = meta.at("row_shape").get<std::vector<std::int64_t>>();
    file->layout_.dtype = dtype_of(meta.at("dtype").get<std::string>());
    file->layout_.capacity = meta.at("capacity").get<std::int64_t>();
    file->layout_.flip = meta.at("flip").get<bool>();
    file->rows_ = meta.at("rows").get<std::int64_t>();
    file->size_ = file->block_offset(4);
    if (file->rows_ < 0 || file->rows_ > file->layout_.capacity ||
        static_cast<std::uint64_t>(st.st_size) != file->size_) {
      throw FormatError("its size does not match its header");
    }
  } catch (const std::exception& e) {
    *why = std::string("damaged (") + e.what() + ")";
    return nullptr;
  }
  file->map(fd.fd, false);
  return file;
}

RowFile::~RowFile() {
  if (data_) ::munmap(data_, size_);
  if (!temp_.empty()) ::unlink(temp_.c_str());  // never committed
}

torch::Tensor RowFile::inputs() const {
  std::vector<std::int64_t> shape{temp_.empty() ? rows_ : layout_.capacity};
  shape.insert(shape.end(), layout_.row_shape.begin(), layout_.row_shape.end());
  return torch::from_blob(data_ + block_offset(0), shape, torch::TensorOptions(layout_.dtype));
}

torch::Tensor RowFile::flipped() const {
  if (!layout_.flip) return {};
  std::vector<std::int64_t> shape{temp_.empty() ? rows_ : layout_.capacity};
  shape.insert(shape.end(), layout_.row_shape.begin(), layout_.row_shape.end());
  return torch::from_blob(data_ + block_offset(1), shape, torch::TensorOptions(layout_.dtype));
}

torch::Tensor RowFile::labels() const {
  return torch::from_blob(data_ + block_offset(2), {temp_.empty() ? rows_ : layout_.capacity},
                          torch::kLong);
}

torch::Tensor RowFile::indices() const {
  return torch::from_blob(data_ + block_offset(3), {temp_.empty() ? rows_ : layout_.capacity},
                          torch::kLong);
}

void RowFile::commit(std::int64_t rows, const std::string& fingerprint) {
  rows_ = rows;
  const nlohmann::json meta = {
      {"fingerprint", fingerprint},     {"dtype", dtype_name(layout_.dtype)},
      {"row_shape", layout_.row_shape}, {"capacity", layout_.capacity},
      {"flip", layout_.flip},           {"rows", rows}};
  const std::string text = meta.dump();
  if (text.size() > kHeaderBytes - 16) throw Error(path_ + ": feature cache header too large");
  std::memcpy(data_, kMagic, 8);
  const std::uint64_t length = text.size();
  std::memcpy(data_ + 8, &length, 8);
  std::memcpy(data_ + 16, text.data(), text.size());
  if (::msync(data_, size_, MS_SYNC) != 0) fail(temp_, "write");
  if (::rename(temp_.c_str(), path_.c_str()) != 0)
    fail(path_, "rename the feature cache into place");
  temp_.clear();
}

}  // namespace tlcore::detail
