#include "internal/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "tlcore/error.h"

namespace tlcore::internal {

void throw_errno(const std::string& path, int err, const char* what) {
  if (err == ENOENT || err == ENOTDIR) throw NotFound(path + ": no such file");
  throw Error(path + ": cannot " + what + ": " +
              std::error_code(err, std::generic_category()).message());
}

void append_file(const std::string& path, std::vector<std::uint8_t>& out) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno(path, errno, "open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(path, errno, "stat");
  // Only regular files: reading a FIFO or a device could block forever.
  if (!S_ISREG(st.st_mode)) throw InvalidArgument(path + ": not a regular file");

  const std::size_t start = out.size();
  // st_size is a hint only: the file may change while it is read.
  std::size_t capacity = static_cast<std::size_t>(st.st_size) + 1;
  out.resize(start + capacity);
  std::size_t got = 0;
  for (;;) {
    if (got == capacity) {
      capacity *= 2;
      out.resize(start + capacity);
    }
    const ssize_t n = ::read(fd.get(), out.data() + start + got, capacity - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      out.resize(start);
      throw_errno(path, err, "read");
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  out.resize(start + got);
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::vector<std::uint8_t> bytes;
  append_file(path, bytes);
  return bytes;
}

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno(path, errno, "stat");
  if (!S_ISREG(st.st_mode)) throw InvalidArgument(path + ": not a regular file");
  return static_cast<std::uint64_t>(st.st_size);
}

}  // namespace tlcore::internal
