#include "internal/tar_index.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "tlcore/error.h"

namespace tlcore::internal {
namespace {

constexpr std::uint64_t kBlock = 512;
// Pax records and GNU long names hold a path or two: more is a damaged or hostile file.
constexpr std::uint64_t kMaxExtendedHeader = 1 << 20;

using Block = std::array<std::uint8_t, kBlock>;

std::string where(const std::string& path, std::uint64_t offset) {
  return path + ": tar header at byte offset " + std::to_string(offset);
}

bool read_block(const ReadAt& read, std::uint64_t offset, std::uint64_t file_size, Block& block) {
  if (offset > file_size || file_size - offset < kBlock) return false;
  return read(offset, block.data(), kBlock) == kBlock;
}

bool is_zero(const Block& block) {
  return std::all_of(block.begin(), block.end(), [](std::uint8_t b) { return b == 0; });
}

std::string field(const Block& block, std::size_t at, std::size_t length) {
  const auto* start = reinterpret_cast<const char*>(block.data() + at);
  return std::string(start, strnlen(start, length));
}

// A numeric field: octal digits (space or NUL padded), or GNU's base-256 when
// the first byte's high bit is set.
std::uint64_t number(const Block& block, std::size_t at, std::size_t length,
                     const std::string& what, const std::string& context) {
  if (block[at] & 0x80) {
    if (block[at] != 0x80) throw FormatError(context + ": negative or oversized " + what);
    std::uint64_t v = 0;
    for (std::size_t i = at + 1; i < at + length; ++i) {
      if (v >> 56) throw FormatError(context + ": " + what + " out of range");
      v = v << 8 | block[i];
    }
    return v;
  }
  std::uint64_t v = 0;
  std::size_t i = at;
  while (i < at + length && block[i] == ' ') ++i;
  for (; i < at + length && block[i] >= '0' && block[i] <= '7'; ++i) {
    if (v >> 60) throw FormatError(context + ": " + what + " out of range");
    v = v << 3 | static_cast<std::uint64_t>(block[i] - '0');
  }
  for (; i < at + length; ++i) {
    if (block[i] != ' ' && block[i] != 0) throw FormatError(context + ": malformed " + what);
  }
  return v;
}

void check_checksum(const Block& block, const std::string& context) {
  const std::string mismatch = context + ": header checksum mismatch (corrupt, or not a tar file)";
  std::uint64_t stored = 0;
  try {
    stored = number(block, 148, 8, "checksum", context);
  } catch (const FormatError&) {
    throw FormatError(mismatch);
  }
  std::uint64_t unsigned_sum = 0;
  std::int64_t signed_sum = 0;  // some old tars summed signed chars
  for (std::size_t i = 0; i < kBlock; ++i) {
    const std::uint8_t b = (i >= 148 && i < 156) ? ' ' : block[i];
    unsigned_sum += b;
    signed_sum += static_cast<std::int8_t>(b);
  }
  if (stored != unsigned_sum && static_cast<std::int64_t>(stored) != signed_sum) {
    throw FormatError(mismatch);
  }
}

std::uint64_t padded(std::uint64_t size) { return (size + kBlock - 1) / kBlock * kBlock; }

// The data of an extended header (pax or GNU long name) at `offset`.
std::string extended_data(const ReadAt& read, std::uint64_t offset, std::uint64_t size,
                          std::uint64_t file_size, const std::string& context) {
  if (size > kMaxExtendedHeader) throw FormatError(context + ": extended header too large");
  if (offset > file_size || file_size - offset < size) {
    throw FormatError(context + ": truncated extended header");
  }
  std::string data(static_cast<std::size_t>(size), '\0');
  if (read(offset, reinterpret_cast<std::uint8_t*>(data.data()), data.size()) != data.size()) {
    throw FormatError(context + ": truncated extended header");
  }
  return data;
}

// Applies pax records ("LENGTH key=value\n") for the path and size.
void apply_pax(const std::string& data, std::string& name, std::uint64_t& size, bool& has_size,
               const std::string& context) {
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t space = data.find(' ', pos);
    if (space == std::string::npos || space == pos || space - pos > 20) break;
    std::uint64_t length = 0;
    for (std::size_t i = pos; i < space; ++i) {
      if (data[i] < '0' || data[i] > '9') throw FormatError(context + ": malformed pax record");
      length = length * 10 + static_cast<std::uint64_t>(data[i] - '0');
    }
    if (length <= space - pos + 1 || length > data.size() - pos || data[pos + length - 1] != '\n') {
      throw FormatError(context + ": malformed pax record");
    }
    const std::string record = data.substr(space + 1, pos + length - 1 - (space + 1));
    const std::size_t equals = record.find('=');
    if (equals != std::string::npos) {
      const std::string key = record.substr(0, equals), value = record.substr(equals + 1);
      if (key == "path") name = value;
      if (key == "size") {
        if (value.empty() || value.size() > 19 ||
            value.find_first_not_of("0123456789") != std::string::npos) {
          throw FormatError(context + ": malformed pax size");
        }
        size = std::stoull(value);
        has_size = true;
      }
    }
    pos += length;
  }
}

}  // namespace

bool at_tar_end(const ReadAt& read, std::uint64_t offset, std::uint64_t file_size) {
  if (offset >= file_size) return true;
  Block block{};
  return read_block(read, offset, file_size, block) && is_zero(block);
}

TarMember read_tar_member(const ReadAt& read, std::uint64_t offset, std::uint64_t file_size,
                          const std::string& path, std::uint64_t* next) {
  TarMember member;
  member.header = offset;
  std::string long_name;
  std::uint64_t pax_size = 0;
  bool has_pax_size = false;
  for (;;) {
    const std::string context = where(path, offset);
    Block block{};
    if (!read_block(read, offset, file_size, block)) {
      throw FormatError(context + ": truncated header (the shard ends early)");
    }
    if (is_zero(block)) throw FormatError(context + ": unexpected end-of-archive block");
    check_checksum(block, context);
    const char type = static_cast<char>(block[156]);
    std::uint64_t size = number(block, 124, 12, "size", context);
    const std::uint64_t data = offset + kBlock;
    if (type == 'x' || type == 'L') {
      const std::string ext = extended_data(read, data, size, file_size, context);
      if (type == 'L') long_name = std::string(ext.c_str());
      if (type == 'x') apply_pax(ext, long_name, pax_size, has_pax_size, context);
      offset = data + padded(size);
      continue;
    }
    if (type == 'g' || type == 'K') {  // global pax records, GNU long link names: not needed
      offset = data + padded(size);
      continue;
    }
    if (has_pax_size) size = pax_size;
    member.name = long_name;
    if (member.name.empty()) {
      const std::string name = field(block, 0, 100);
      const bool ustar = std::memcmp(block.data() + 257, "ustar\0", 6) == 0;
      const std::string prefix = ustar ? field(block, 345, 155) : std::string();
      member.name = prefix.empty() ? name : prefix + "/" + name;
    }
    member.regular = type == '0' || type == '\0' || type == '7';
    member.directory = type == '5';
    member.data = data;
    member.size = member.regular ? size : 0;
    // Folders and links carry no data; anything else skips its size in blocks.
    const std::uint64_t skip = (type == '1' || type == '2' || type == '5') ? 0 : size;
    if (skip > file_size || data > file_size - skip) {
      throw FormatError(path + ":" + member.name + ": truncated member (" + std::to_string(size) +
                        " bytes at byte offset " + std::to_string(data) + ", the shard holds " +
                        std::to_string(file_size) + ")");
    }
    *next = std::min(data + padded(skip), file_size);
    return member;
  }
}

}  // namespace tlcore::internal
