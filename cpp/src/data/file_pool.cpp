#include "internal/file_pool.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "tlcore/error.h"

namespace tlcore::internal {
std::size_t max_open_files(int max_open) {
  if (max_open > 0) return static_cast<std::size_t>(max_open);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 256;
  return std::clamp<std::size_t>(static_cast<std::size_t>(limit.rlim_cur) / 4, 4, 256);
}

Fd open_regular_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno(path, errno, "open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(path, errno, "stat");
  if (!S_ISREG(st.st_mode)) throw InvalidArgument(path + ": not a regular file");
  return fd;
}

std::size_t pread_fully(int fd, const std::string& path, std::uint64_t offset, std::uint8_t* out,
                        std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, out + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno(path, errno, "read");
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

FilePool::FilePool(std::vector<std::string> paths, int max_open)
    : paths_(std::move(paths)), max_open_(max_open_files(max_open)) {}

std::shared_ptr<const Fd> FilePool::acquire(std::size_t file) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = open_.find(file);
    if (it != open_.end()) {
      recent_.splice(recent_.begin(), recent_, it->second.place);
      return it->second.fd;
    }
  }
  // Opened outside the lock: a slow disk must not stall readers of other files.
  auto fd = std::make_shared<const Fd>(open_regular_file(paths_[file]));
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = open_.find(file);
  if (it != open_.end()) return it->second.fd;  // another thread opened it meanwhile
  while (open_.size() >= max_open_) {
    open_.erase(recent_.back());
    recent_.pop_back();
  }
  recent_.push_front(file);
  open_.emplace(file, Open{fd, recent_.begin()});
  return fd;
}

std::size_t FilePool::read(std::size_t file, std::uint64_t offset, std::uint8_t* out,
                           std::size_t n) const {
  const std::shared_ptr<const Fd> fd = acquire(file);
  return pread_fully(fd->get(), paths_[file], offset, out, n);
}

std::size_t FilePool::open_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return open_.size();
}

}  // namespace tlcore::internal
