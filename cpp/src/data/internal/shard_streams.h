// Members of compressed shards, read by ordinal from streams that only move
// forward (private to cpp/src/data). A loader reads a shard's samples nearly
// in order (its shuffle buffer draws from a window), so each request is met by
// moving an open stream ahead; the image members it passes on the way are
// kept, up to a memory budget, for the requests that follow. A request behind
// a stream's position (random access, or a member dropped from the budget)
// reads the shard again from its start: correct, but slow.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tlcore::internal {

class ShardStreams {
 public:
  // `memory`: bytes of passed members kept; `max_open`: streams open at once.
  ShardStreams(std::vector<std::string> paths, std::uint64_t memory, std::size_t max_open);
  ~ShardStreams();

  // The data of member `ordinal` of shard `shard`, which the index named `name`.
  // FormatError naming shard and member when it is not there any more or is damaged.
  // Safe to call from several threads at once.
  std::vector<std::uint8_t> read(std::uint32_t shard, std::uint64_t ordinal,
                                 const std::string& name, std::uint64_t size);

 private:
  struct Stream;
  struct Kept {
    std::string name;
    std::vector<std::uint8_t> bytes;
    std::uint64_t age;
  };
  using Key = std::pair<std::uint32_t, std::uint64_t>;

  std::shared_ptr<Stream> acquire(std::uint32_t shard);
  bool take(const Key& key, const std::string& name, std::vector<std::uint8_t>* out);
  void keep(const Key& key, std::string name, std::vector<std::uint8_t> bytes);

  std::vector<std::string> paths_;
  std::uint64_t memory_;
  std::size_t max_open_;
  std::mutex mutex_;  // guards everything below (each stream has its own)
  std::map<std::uint32_t, std::shared_ptr<Stream>> streams_;
  std::map<Key, Kept> kept_;
  std::map<std::uint64_t, Key> by_age_;  // oldest first, for eviction
  std::uint64_t kept_bytes_ = 0;
  std::uint64_t clock_ = 0;
};

}  // namespace tlcore::internal
