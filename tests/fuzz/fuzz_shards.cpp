// Tar shards (plain, read in place, or compressed, streamed) and the index
// files that describe them.
// Input: 1 byte (bit 0: the rest is an index payload, decoded alone, as a file
// anyone could have written; otherwise the rest is a shard, scanned afresh and
// read; bit 1: skip_corrupt), then the bytes.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "../../cpp/src/data/internal/tar_shard_index.h"
#include "fuzz_dataset.h"
#include "fuzz_input.h"
#include "tlcore/data/shards.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tlcore::fuzz::Input in(data, size);
  const std::uint8_t mode = in.byte();
  if (mode & 1) {
    const std::vector<std::uint8_t> payload(in.data(), in.data() + in.size());
    try {
      const tlcore::internal::TarShardIndex index =
          tlcore::internal::decode_tar_shard_index(payload);
      for (const auto& sample : index.samples) {
        if (sample.label >= index.labels.size()) __builtin_trap();
      }
    } catch (const tlcore::Error&) {
    }
    return 0;
  }
  const std::string path = tlcore::fuzz::write_file("data.tar", in.data(), in.size());
  // A fresh index folder each run: every input is scanned, never served from the cache.
  const std::filesystem::path index_dir = tlcore::fuzz::scratch() / "index";
  std::filesystem::remove_all(index_dir);
  tlcore::ShardOptions options;
  options.index_dir = index_dir.string();
  options.skip_corrupt = (mode & 2) != 0;
  options.threads = 1;
  try {
    tlcore::fuzz::read_all(*tlcore::open_shards(path, options));
  } catch (const tlcore::Error&) {
  }
  return 0;
}
