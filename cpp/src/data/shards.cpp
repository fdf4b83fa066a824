// Tar shards read in place: each shard is indexed once (tar_shard_index.cpp),
// the dataset keeps only offsets, sizes, labels and member names, and image()
// reads one member with a positioned read through a bounded pool of open files.
// Compressed shards cannot be read in place: their members are found by
// ordinal in streams that move forward (shard_streams.cpp).
#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "internal/checks.h"
#include "internal/file_pool.h"
#include "internal/parallel.h"
#include "internal/shard_paths.h"
#include "internal/shard_streams.h"
#include "internal/tar_shard_index.h"
#include "tlcore/data/decode.h"
#include "tlcore/data/shards.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

using internal::ShardLayout;
using internal::TarShardIndex;

struct Sample {
  std::uint64_t data;     // offset of the image bytes in the shard (streamed: member ordinal)
  std::uint64_t name_at;  // offset of the member name in the names buffer
  std::uint32_t size;
  std::uint32_t name_length;
  std::uint32_t shard;
  std::int32_t label;
};

class TarShards final : public Dataset {
 public:
  TarShards(std::unique_ptr<internal::FilePool> files,
            std::unique_ptr<internal::ShardStreams> streams, std::vector<bool> streamed,
            std::vector<Sample> samples, std::string names, std::vector<std::string> classes,
            std::vector<std::int64_t> starts)
      : files_(std::move(files)),
        streams_(std::move(streams)),
        streamed_(std::move(streamed)),
        samples_(std::move(samples)),
        names_(std::move(names)),
        classes_(std::move(classes)),
        starts_(std::move(starts)) {}

  std::int64_t size() const override { return static_cast<std::int64_t>(samples_.size()); }
  std::int64_t label(std::int64_t index) const override { return sample(index).label; }
  const std::vector<std::string>& classes() const override { return classes_; }
  std::vector<std::int64_t> shard_starts() const override { return starts_; }

  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override {
    internal::check_options(options);
    const std::vector<std::uint8_t> bytes = encoded(index);
    return decode_image(bytes.data(), bytes.size(), options, source(index));
  }

  std::vector<std::uint8_t> encoded(std::int64_t index) const override {
    const Sample& s = sample(index);
    if (streamed_[s.shard]) return streams_->read(s.shard, s.data, name(s), s.size);
    std::vector<std::uint8_t> bytes(s.size);
    std::size_t got = 0;
    try {
      got = files_->read(s.shard, s.data, bytes.data(), bytes.size());
    } catch (const NotFound&) {
      // A data error, not a programming one: skip_corrupt may skip it.
      throw FormatError(source(index) + ": the shard has gone since the dataset was opened");
    }
    if (got != bytes.size()) {
      throw FormatError(source(index) + ": truncated member (" + std::to_string(got) + " of " +
                        std::to_string(s.size) + " bytes): the shard changed after it was indexed");
    }
    return bytes;
  }

  std::string source(std::int64_t index) const override {
    const Sample& s = sample(index);
    return files_->path(s.shard) + ":" + name(s);
  }

 private:
  std::string name(const Sample& s) const { return names_.substr(s.name_at, s.name_length); }

  const Sample& sample(std::int64_t index) const {
    internal::check_index(index, size());
    return samples_[static_cast<std::size_t>(index)];
  }

  std::unique_ptr<internal::FilePool> files_;
  std::unique_ptr<internal::ShardStreams> streams_;
  std::vector<bool> streamed_;  // per shard
  std::vector<Sample> samples_;
  std::string names_;
  std::vector<std::string> classes_;
  std::vector<std::int64_t> starts_;
};

std::vector<TarShardIndex> index_shards(const std::vector<std::string>& paths,
                                        const ShardOptions& options, std::int64_t* scanned) {
  std::vector<TarShardIndex> indexes(paths.size());
  std::atomic<std::int64_t> count{0};
  internal::parallel_for(paths.size(), options.threads, [&](std::size_t i) {
    bool was_scanned = false;
    indexes[i] =
        internal::tar_shard_index(paths[i], options.index_dir, options.index_beside, &was_scanned);
    if (was_scanned) count.fetch_add(1);
  });
  *scanned = count.load();
  return indexes;
}

// Global label of every shard's local label; -1 for images outside any class.
using LabelMaps = std::vector<std::vector<std::int64_t>>;

// Class folders: the class is the folder below the leading folders every
// image's folder shares (at least the last one is kept, so a single class stays one).
LabelMaps folder_labels(const std::vector<TarShardIndex>& indexes, const ShardOptions& options,
                        std::vector<std::string>& classes) {
  std::vector<std::string> common;
  bool first = true;
  std::size_t deepest = 0;
  for (const TarShardIndex& index : indexes) {
    for (const std::string& dir : index.labels) {
      const std::vector<std::string> parts = internal::split_path(dir);
      if (parts.empty()) continue;
      deepest = std::max(deepest, parts.size());
      if (first) common = parts;
      const auto mismatch = std::mismatch(common.begin(), common.end(), parts.begin(), parts.end());
      common.erase(mismatch.first, common.end());
      first = false;
    }
  }
  const std::size_t prefix = common.size() < deepest ? common.size() : common.size() - 1;
  std::set<std::string> names;
  std::vector<std::vector<std::string>> shard_names;
  for (const TarShardIndex& index : indexes) {
    std::vector<std::string>& local = shard_names.emplace_back();
    for (const std::string& dir : index.labels) {
      const std::vector<std::string> parts = internal::split_path(dir);
      local.push_back(parts.size() > prefix ? parts[prefix] : std::string());
      if (!local.back().empty()) names.insert(local.back());
    }
  }
  if (options.classes.empty()) classes.assign(names.begin(), names.end());
  std::map<std::string, std::int64_t> id;
  for (std::size_t k = 0; k < classes.size(); ++k) id.emplace(classes[k], k);
  LabelMaps maps;
  for (const std::vector<std::string>& local : shard_names) {
    std::vector<std::int64_t>& map = maps.emplace_back();
    for (const std::string& name : local) {
      const auto it = id.find(name);
      map.push_back(name.empty() ? -1 : it == id.end() ? -2 : it->second);
    }
  }
  return maps;
}

bool is_integer_label(const std::string& s) {
  return !s.empty() && s.size() <= 18 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// Keyed samples: integer labels index the classes ("0".."max" by default), names
// are looked up in them (sorted names by default).
LabelMaps keyed_labels(const std::vector<TarShardIndex>& indexes, const ShardOptions& options,
                       std::vector<std::string>& classes) {
  bool numeric = true;
  std::set<std::string> names;
  std::int64_t max_label = -1;
  for (const TarShardIndex& index : indexes) {
    for (const std::string& label : index.labels) {
      numeric = numeric && is_integer_label(label);
      names.insert(label);
      if (is_integer_label(label)) max_label = std::max<std::int64_t>(max_label, std::stoll(label));
    }
  }
  if (options.classes.empty()) {
    if (numeric) {
      if (max_label >= (1 << 20)) {
        throw FormatError("label " + std::to_string(max_label) +
                          " is not a class index (give the class names)");
      }
      for (std::int64_t k = 0; k <= max_label; ++k) classes.push_back(std::to_string(k));
    } else {
      classes.assign(names.begin(), names.end());
    }
  }
  std::map<std::string, std::int64_t> id;
  for (std::size_t k = 0; k < classes.size(); ++k)
    id.emplace(numeric ? std::to_string(k) : classes[k], k);
  LabelMaps maps;
  for (const TarShardIndex& index : indexes) {
    std::vector<std::int64_t>& map = maps.emplace_back();
    for (const std::string& label : index.labels) {
      // "007" names class 7.
      const auto it = id.find(numeric ? std::to_string(std::stoll(label)) : label);
      map.push_back(it == id.end() ? -2 : it->second);
    }
  }
  return maps;
}

// The first sample whose global label is `which`, as "shard:member".
std::string first_with(const std::vector<std::string>& paths,
                       const std::vector<TarShardIndex>& indexes, const LabelMaps& maps,
                       std::int64_t which, std::string* label) {
  for (std::size_t s = 0; s < indexes.size(); ++s) {
    for (const internal::ShardSample& sample : indexes[s].samples) {
      if (maps[s][sample.label] == which) {
        *label = indexes[s].labels[sample.label];
        return paths[s] + ":" + sample.name;
      }
    }
  }
  return {};
}

}  // namespace

const std::vector<std::string>& tar_shard_extensions() {
  static const std::vector<std::string> extensions{".tar",     ".tar.gz", ".tgz",
                                                   ".tar.bz2", ".tar.xz", ".tar.zst"};
  return extensions;
}

std::shared_ptr<Dataset> open_shards(const std::string& pattern, const ShardOptions& options,
                                     ShardStats* stats) {
  ShardStats local;
  ShardStats& st = stats ? *stats : local;
  st = ShardStats{};
  const std::vector<std::string> paths = internal::shard_paths(pattern, tar_shard_extensions());
  if (paths.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw InvalidArgument(pattern + ": too many shards");
  }
  std::vector<TarShardIndex> indexes = index_shards(paths, options, &st.indexed);
  st.shards = static_cast<std::int64_t>(paths.size());

  const TarShardIndex* layout_of = nullptr;
  std::size_t layout_shard = 0;
  for (std::size_t s = 0; s < indexes.size(); ++s) {
    const TarShardIndex& index = indexes[s];
    st.non_image += index.non_image;
    st.skipped += index.problem_count;
    for (const std::string& p : index.problems) {
      if (st.problems.size() < 20) st.problems.push_back(p);
    }
    if (index.problem_count > 0 && !options.skip_corrupt) {
      const std::int64_t more = index.problem_count - 1;
      throw FormatError(index.problems.front() +
                        (more > 0 ? " (and " + std::to_string(more) + " more in the shard)" : ""));
    }
    if (index.layout == ShardLayout::kEmpty) continue;
    if (layout_of && layout_of->layout != index.layout) {
      throw FormatError(paths[layout_shard] + " and " + paths[s] +
                        ": one shard labels images with .cls/.json files, the other by class "
                        "folder; a dataset uses one layout");
    }
    layout_of = &index;
    layout_shard = s;
  }
  if (!layout_of) throw FormatError(pattern + ": the shards hold no labelled images");

  std::vector<std::string> classes = options.classes;
  const LabelMaps maps = layout_of->layout == ShardLayout::kKeyed
                             ? keyed_labels(indexes, options, classes)
                             : folder_labels(indexes, options, classes);
  std::string label;
  if (const std::string where = first_with(paths, indexes, maps, -2, &label); !where.empty()) {
    throw FormatError(where + ": label '" + label + "' is not one of the " +
                      std::to_string(classes.size()) + " classes given");
  }

  std::vector<Sample> samples;
  std::string names;
  std::vector<std::int64_t> starts;
  std::vector<bool> streamed;
  for (std::size_t s = 0; s < indexes.size(); ++s) {
    starts.push_back(static_cast<std::int64_t>(samples.size()));
    streamed.push_back(indexes[s].streamed);
    for (const internal::ShardSample& sample : indexes[s].samples) {
      const std::int64_t global = maps[s][sample.label];
      if (global < 0) {
        ++st.non_image;  // an image outside every class folder
        continue;
      }
      samples.push_back({sample.data, names.size(), static_cast<std::uint32_t>(sample.size),
                         static_cast<std::uint32_t>(sample.name.size()),
                         static_cast<std::uint32_t>(s), static_cast<std::int32_t>(global)});
      names += sample.name;
    }
    indexes[s] = TarShardIndex{};  // the per-shard copy of the names is no longer needed
  }
  if (samples.empty()) throw FormatError(pattern + ": the shards hold no labelled images");
  // Shards left empty would make zero-length runs: drop their starts.
  starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
  if (starts.back() == static_cast<std::int64_t>(samples.size())) starts.pop_back();
  std::unique_ptr<internal::ShardStreams> streams;
  if (std::find(streamed.begin(), streamed.end(), true) != streamed.end()) {
    streams = std::make_unique<internal::ShardStreams>(paths, options.stream_memory,
                                                       internal::max_open_files(options.max_open));
  }
  return std::make_shared<TarShards>(std::make_unique<internal::FilePool>(paths, options.max_open),
                                     std::move(streams), std::move(streamed), std::move(samples),
                                     std::move(names), std::move(classes), std::move(starts));
}

}  // namespace tlcore
