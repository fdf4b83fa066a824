// Datasets larger than memory: tar shards, indexed once and never loaded
// whole. Plain tars are read in place with positioned reads; compressed ones
// (gzip, bzip2, xz, zstd) stream front to back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tlcore/data/dataset.h"

namespace tlcore {

struct ShardOptions {
  // Class names. For integer labels (.cls files), the names of classes
  // 0..K-1 (default "0".."max label"); for named labels (class folders, names
  // in .cls or .json), the classes in index order (default: sorted by name).
  std::vector<std::string> classes;
  // Where indexes are kept: "" for the user's cache folder ($TLCORE_CACHE_DIR,
  // $XDG_CACHE_HOME/tlcore or ~/.cache/tlcore). An index written beside a shard
  // (SHARD.tlcidx, as `tlcore shard` writes it) is used first.
  std::string index_dir;
  // Save indexes beside the shards (SHARD.tlcidx), for data prepared once and
  // read by many users or machines (as `tlcore shard` does).
  bool index_beside = false;
  // Skip (and count) samples without a label, with a label that does not
  // parse, and the rest of a truncated shard, instead of raising.
  bool skip_corrupt = false;
  int threads = 0;   // shards indexed at once; 0: one per core
  int max_open = 0;  // shard files open at once; 0: a quarter of the descriptor limit, <= 256
  // Compressed shards: bytes of images kept after a stream passed them, for
  // the reads the loader's shuffle buffer asks for next. It should hold about
  // shuffle_buffer images; one dropped costs a read of its shard from the start.
  std::uint64_t stream_memory = std::uint64_t{512} << 20;
};

struct ShardStats {
  std::int64_t shards = 0;
  std::int64_t indexed = 0;           // shards scanned on this open (the others had a valid index)
  std::int64_t skipped = 0;           // samples left out under skip_corrupt
  std::int64_t non_image = 0;         // members that are neither an image nor its label
  std::vector<std::string> problems;  // what was skipped, first 20, naming shard and member
};

// Every sample of the tar shards that `pattern` names: "train-{000000..000999}.tar",
// a glob, a folder of .tar files or a list file (see the pattern rules in
// open_tfrecords). Two layouts, told apart by the shard's members:
// - WebDataset's: members grouped by key (the path up to the first '.' of the
//   file name), e.g. "n0001/42.jpg" + "n0001/42.cls"; the label is a .cls file
//   (an integer or a class name) or a .json file (an object with "label",
//   "cls" or "class", or a bare value);
// - class folders: ".../<class>/<image>", the class being the folder below
//   the leading folders every image of the dataset shares (as open_image_archive).
// Samples keep the shards' order and each shard's member order, so a loader
// reading shard by shard reads each file front to back (see
// LoaderOptions::shuffle_buffer). A compressed shard is read by moving a
// stream forward: reading its samples in order is fast, random access
// decompresses the shard again each time it steps back. Throws NotFound for
// missing shards; FormatError naming shard and member for a damaged shard, an
// image without its label or a label that does not parse (unless
// skip_corrupt); Unsupported for a compressed shard in a build without libarchive.
// The file names a folder of shards is searched for: ".tar", and compressed
// tars (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst").
const std::vector<std::string>& tar_shard_extensions();

std::shared_ptr<Dataset> open_shards(const std::string& pattern, const ShardOptions& options = {},
                                     ShardStats* stats = nullptr);

}  // namespace tlcore
