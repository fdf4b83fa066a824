// What every harness shares: a scratch folder on tmpfs for parsers that read
// files, and a reader that splits the fuzzer's bytes into the parts a harness needs.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace tlcore::fuzz {

// One folder per process, removed at exit (libFuzzer forks workers with -jobs).
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const char* shm = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string pattern = std::string(shm) + "/tlcore-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    std::atexit([] { std::filesystem::remove_all(scratch()); });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

// Writes `size` bytes to `name` in the scratch folder (replacing it) and returns its path.
inline std::string write_file(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const auto path = scratch() / name;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) std::abort();  // tmpfs full: a broken harness, not a finding
  return path.string();
}

// Takes bytes off the front of the fuzzer's input.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return size_ ? (--size_, *data_++) : 0; }
  // A 16-bit length, capped at what is left.
  std::size_t length() {
    const std::size_t n = std::size_t(byte()) << 8 | byte();
    return n < size_ ? n : size_;
  }
  // The next `n` bytes as a (data, size) view.
  const std::uint8_t* take(std::size_t n) {
    const auto* p = data_;
    data_ += n;
    size_ -= n;
    return p;
  }
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
};

}  // namespace tlcore::fuzz
