#include "internal/tar_shard_index.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

#include "internal/archive_stream.h"
#include "internal/checks.h"
#include "internal/file_pool.h"
#include "internal/tar_index.h"
#include "tlcore/data/decode.h"
#include "tlcore/error.h"

namespace tlcore::internal {
namespace {

constexpr std::size_t kMaxProblemsKept = 20;
// Label files hold a number or a name: anything larger is not one.
constexpr std::uint64_t kMaxLabelBytes = 1 << 16;
constexpr const char* kIndexKey = "tar-shard 2";

// A WebDataset group: the members sharing one key.
struct Group {
  std::string key;
  std::optional<TarMember> image;
  std::optional<std::string> label;
  std::string label_member;
  std::string problem;  // a label file that does not parse
};

// "dir/abc.seg.jpg" -> key "dir/abc", extension "seg.jpg" (WebDataset's rule: the first dot
// of the file name).
std::pair<std::string, std::string> split_key(const std::string& name) {
  const std::size_t slash = name.rfind('/');
  const std::size_t base = slash == std::string::npos ? 0 : slash + 1;
  const std::size_t dot = name.find('.', base);
  if (dot == std::string::npos) return {name, ""};
  std::string ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return {name.substr(0, dot), ext};
}

bool is_label_extension(const std::string& ext) { return ext == "cls" || ext == "json"; }

std::string trimmed(const std::string& s) {
  const std::size_t first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

// The label a .cls or .json member holds; throws FormatError saying why not.
std::string parse_label(const std::string& ext, const std::string& text) {
  if (ext == "cls") {
    std::string label = trimmed(text);
    if (label.empty()) throw FormatError("empty label file");
    if (label.find_first_of("\r\n") != std::string::npos || label.find('\0') != std::string::npos) {
      throw FormatError("a label file holds one number or name on one line");
    }
    return label;
  }
  nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
  if (value.is_discarded()) throw FormatError("label file is not valid JSON");
  if (value.is_object()) {
    for (const char* key : {"label", "cls", "class"}) {
      if (value.contains(key)) {
        value = value[key];
        break;
      }
    }
  }
  if (value.is_number_unsigned()) return std::to_string(value.get<std::uint64_t>());
  if (value.is_string() && !trimmed(value.get<std::string>()).empty()) {
    return trimmed(value.get<std::string>());
  }
  throw FormatError(
      R"(no label in the JSON: expected a non-negative integer or a name, alone or as "label", "cls" or "class")");
}

void add_problem(TarShardIndex& index, std::string problem) {
  if (index.problems.size() < kMaxProblemsKept) index.problems.push_back(std::move(problem));
  ++index.problem_count;
}

// Groups members into samples as they are listed, whatever reads them.
class SampleCollector {
 public:
  explicit SampleCollector(std::string path) : path_(std::move(path)) {}

  // `read_label` returns a label member's text (called only for label files).
  template <typename ReadLabel>
  void add(const TarMember& member, ReadLabel&& read_label) {
    if (!member.regular) return;
    const std::size_t slash = member.name.rfind('/');
    if (is_hidden(member.name.substr(slash == std::string::npos ? 0 : slash + 1))) return;
    auto [key, ext] = split_key(member.name);
    if (groups_.empty() || groups_.back().key != key) groups_.push_back(Group{key, {}, {}, {}, {}});
    Group& group = groups_.back();
    if (has_image_extension(member.name) && !group.image) {
      group.image = member;
    } else if (is_label_extension(ext) && !group.label && group.problem.empty()) {
      group.label_member = member.name;
      try {
        if (member.size > kMaxLabelBytes) throw FormatError("label file too large");
        group.label = parse_label(ext, read_label());
      } catch (const FormatError& e) {
        group.problem = path_ + ":" + member.name + ": " + e.what();
      }
    } else {
      ++index_.non_image;
    }
  }

  // The rest of the shard cannot be read: `why`.
  void damaged(const std::string& why, bool after_members) {
    add_problem(index_, why + (after_members ? " (the rest of the shard is unreadable)" : ""));
  }

  TarShardIndex finish(bool streamed);

 private:
  std::string path_;
  std::vector<Group> groups_;
  TarShardIndex index_;
};

TarShardIndex SampleCollector::finish(bool streamed) {
  const bool keyed = std::any_of(groups_.begin(), groups_.end(),
                                 [](const Group& g) { return g.label || !g.problem.empty(); });
  std::map<std::string, std::uint32_t> ids;
  for (const Group& g : groups_) {
    if (!g.image) {
      if (g.label || !g.problem.empty()) ++index_.non_image;  // a label without its image
      continue;
    }
    if (!g.problem.empty()) {
      add_problem(index_, g.problem);
      continue;
    }
    if (keyed && !g.label) {
      add_problem(index_, path_ + ":" + g.image->name + ": no label file (" + g.key + ".cls or " +
                              g.key + ".json) beside the image");
      continue;
    }
    if (g.image->size > UINT32_MAX) {
      add_problem(index_, path_ + ":" + g.image->name + ": image member over 4 GiB");
      continue;
    }
    const std::string& name = g.image->name;
    const std::size_t slash = name.rfind('/');
    const std::string label =
        keyed ? *g.label : (slash == std::string::npos ? "" : name.substr(0, slash));
    const auto id = ids.emplace(label, static_cast<std::uint32_t>(ids.size())).first->second;
    index_.samples.push_back({name, g.image->data, g.image->size, id});
  }
  index_.labels.resize(ids.size());
  for (const auto& [label, id] : ids) index_.labels[id] = label;
  if (!index_.samples.empty()) {
    index_.layout = keyed ? ShardLayout::kKeyed : ShardLayout::kClassFolders;
  }
  index_.streamed = streamed;
  return std::move(index_);
}

// A plain tar: headers read in place, label files with positioned reads.
TarShardIndex scan_plain(const std::string& path) {
  const Fd fd = open_regular_file(path);
  const std::uint64_t size = file_stamp(path).size;
  const ReadAt read = [&](std::uint64_t offset, std::uint8_t* out, std::size_t n) {
    return pread_fully(fd.get(), path, offset, out, n);
  };
  SampleCollector collector(path);
  std::uint64_t offset = 0;
  try {
    while (!at_tar_end(read, offset, size)) {
      std::uint64_t next = 0;
      const TarMember member = read_tar_member(read, offset, size, path, &next);
      offset = next;
      collector.add(member, [&] {
        std::string text(static_cast<std::size_t>(member.size), '\0');
        if (read(member.data, reinterpret_cast<std::uint8_t*>(text.data()), text.size()) !=
            text.size()) {
          throw FormatError("truncated label file");
        }
        return text;
      });
    }
  } catch (const FormatError& e) {
    collector.damaged(e.what(), offset > 0);
  }
  return collector.finish(false);
}

// A compressed tar: read front to back, every member found by its ordinal. A
// member is added once the stream has passed its end: skipping its data is
// what shows it whole.
TarShardIndex scan_streamed(const std::string& path) {
  struct Pending {
    TarMember member;
    std::string label;  // a label file's text, read while the stream was on it
    std::string error;
  };
  std::optional<ArchiveStream> stream;
  SampleCollector collector(path);
  std::optional<Pending> pending;
  const auto flush = [&] {
    if (!pending) return;
    collector.add(pending->member, [&] {
      if (!pending->error.empty()) throw FormatError(pending->error);
      return pending->label;
    });
    pending.reset();
  };
  TarMember member;
  bool any = false;
  try {
    stream.emplace(path);
    while (stream->next(&member)) {
      flush();
      any = true;
      pending = Pending{member, {}, {}};
      if (member.regular && is_label_extension(split_key(member.name).second) &&
          member.size <= kMaxLabelBytes) {
        std::vector<std::uint8_t> bytes;
        try {
          stream->read(bytes, kMaxLabelBytes);
          pending->label.assign(bytes.begin(), bytes.end());
        } catch (const FormatError&) {
          pending->error = "truncated or corrupt label file";
        }
      }
    }
    flush();
  } catch (const FormatError& e) {
    collector.damaged(e.what(), any);
  }
  return collector.finish(true);
}

}  // namespace

TarShardIndex scan_tar_shard(const std::string& path) {
  return compression_of(path).empty() ? scan_plain(path) : scan_streamed(path);
}

std::vector<std::uint8_t> encode(const TarShardIndex& index) {
  IndexWriter w;
  w.u8(static_cast<std::uint8_t>(index.layout));
  w.u8(index.streamed ? 1 : 0);
  w.u64(index.labels.size());
  for (const std::string& label : index.labels) w.text(label);
  w.u64(index.samples.size());
  for (const ShardSample& s : index.samples) {
    w.text(s.name);
    w.u64(s.data);
    w.u64(s.size);
    w.u64(s.label);
  }
  w.u64(static_cast<std::uint64_t>(index.non_image));
  w.u64(static_cast<std::uint64_t>(index.problem_count));
  w.u64(index.problems.size());
  for (const std::string& p : index.problems) w.text(p);
  return std::move(w.bytes());
}

TarShardIndex decode_tar_shard_index(const std::vector<std::uint8_t>& payload) {
  IndexReader r(payload);
  TarShardIndex index;
  const std::uint8_t layout = r.u8();
  if (layout > 2) throw FormatError("index: unknown layout");
  index.layout = static_cast<ShardLayout>(layout);
  const std::uint8_t streamed = r.u8();
  if (streamed > 1) throw FormatError("index: unknown kind");
  index.streamed = streamed == 1;
  // Each entry takes at least 8 bytes: a count beyond the payload is damage, not a reason
  // to reserve memory.
  const auto count = [&](std::uint64_t n) {
    if (n > payload.size() / 8) throw FormatError("index: count out of range");
    return static_cast<std::size_t>(n);
  };
  index.labels.resize(count(r.u64()));
  for (std::string& label : index.labels) label = r.text();
  index.samples.resize(count(r.u64()));
  for (ShardSample& s : index.samples) {
    s.name = r.text();
    s.data = r.u64();
    s.size = r.u64();
    const std::uint64_t label = r.u64();
    if (label >= index.labels.size() || s.size > UINT32_MAX) {
      throw FormatError("index: sample out of range");
    }
    s.label = static_cast<std::uint32_t>(label);
  }
  index.non_image = static_cast<std::int64_t>(r.u64());
  index.problem_count = static_cast<std::int64_t>(r.u64());
  index.problems.resize(count(r.u64()));
  for (std::string& p : index.problems) p = r.text();
  if (!r.done()) throw FormatError("index: trailing bytes");
  return index;
}

TarShardIndex tar_shard_index(const std::string& path, const std::string& index_dir, bool beside,
                              bool* scanned) {
  const FileStamp stamp = file_stamp(path);
  const std::string cached = index_path(path, index_dir, "tar");
  for (const std::string& candidate : {path + ".tlcidx", cached}) {
    if (auto payload = load_index(candidate, stamp, kIndexKey)) {
      try {
        TarShardIndex index = decode_tar_shard_index(*payload);
        // Offsets come from a file anyone could have written: check them against the shard.
        // (A streamed shard's members are found by ordinal, and their names checked on reading.)
        const bool inside =
            index.streamed ||
            std::all_of(index.samples.begin(), index.samples.end(), [&](const ShardSample& s) {
              return s.data <= stamp.size && s.size <= stamp.size - s.data;
            });
        if (inside) {
          *scanned = false;
          return index;
        }
      } catch (const FormatError&) {
        // A damaged index is rebuilt below.
      }
    }
  }
  TarShardIndex index = scan_tar_shard(path);
  const std::vector<std::uint8_t> payload = encode(index);
  if (!beside || !save_index(path + ".tlcidx", stamp, kIndexKey, payload)) {
    save_index(cached, stamp, kIndexKey, payload);
  }
  *scanned = true;
  return index;
}

}  // namespace tlcore::internal
