// Reading whole files, shared by the data sources (private to cpp/src/data).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tlcore::internal {

// Owns a POSIX file descriptor (-1: none) and closes it.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Throws for a failed system call on `path`: NotFound for ENOENT/ENOTDIR,
// Error with the system's message otherwise.
[[noreturn]] void throw_errno(const std::string& path, int err, const char* what);

// Appends the whole file at `path` to `out`. NotFound if it does not exist,
// Error for any other failure to read it, both naming the path.
void append_file(const std::string& path, std::vector<std::uint8_t>& out);

// The whole file at `path` (see append_file).
std::vector<std::uint8_t> read_file(const std::string& path);

// Size in bytes of the regular file at `path`; NotFound if absent.
std::uint64_t file_size(const std::string& path);

}  // namespace tlcore::internal
