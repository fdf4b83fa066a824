#include "internal/shard_streams.h"

#include <utility>

#include "internal/archive_stream.h"
#include "tlcore/data/decode.h"
#include "tlcore/error.h"

namespace tlcore::internal {
namespace {

// Small blocks: a thousand-shard epoch may hold dozens of streams open.
constexpr std::size_t kBlockSize = 256 << 10;

}  // namespace

struct ShardStreams::Stream {
  std::mutex mutex;  // one reader moves a stream at a time
  std::unique_ptr<ArchiveStream> archive;
  std::uint64_t next = 0;  // ordinal of the member the stream reaches next
  std::uint64_t used = 0;  // when last acquired, for closing the least recently used
};

ShardStreams::ShardStreams(std::vector<std::string> paths, std::uint64_t memory,
                           std::size_t max_open)
    : paths_(std::move(paths)), memory_(memory), max_open_(max_open > 0 ? max_open : 1) {}

ShardStreams::~ShardStreams() = default;

std::shared_ptr<ShardStreams::Stream> ShardStreams::acquire(std::uint32_t shard) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::shared_ptr<Stream>& slot = streams_[shard];
  if (!slot) slot = std::make_shared<Stream>();
  slot->used = ++clock_;
  std::shared_ptr<Stream> stream = slot;
  // Close the least recently used idle streams beyond the limit (one in use stays open).
  while (streams_.size() > max_open_) {
    auto oldest = streams_.end();
    for (auto it = streams_.begin(); it != streams_.end(); ++it) {
      if (it->second.use_count() == 1 &&
          (oldest == streams_.end() || it->second->used < oldest->second->used)) {
        oldest = it;
      }
    }
    if (oldest == streams_.end()) break;
    streams_.erase(oldest);
  }
  return stream;
}

bool ShardStreams::take(const Key& key, const std::string& name, std::vector<std::uint8_t>* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = kept_.find(key);
  if (it == kept_.end() || it->second.name != name) return false;
  *out = std::move(it->second.bytes);
  kept_bytes_ -= out->size();
  by_age_.erase(it->second.age);
  kept_.erase(it);
  return true;
}

void ShardStreams::keep(const Key& key, std::string name, std::vector<std::uint8_t> bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (bytes.size() > memory_ || kept_.count(key)) return;
  while (kept_bytes_ + bytes.size() > memory_) {
    const auto oldest = by_age_.begin();
    const auto it = kept_.find(oldest->second);
    kept_bytes_ -= it->second.bytes.size();
    kept_.erase(it);
    by_age_.erase(oldest);
  }
  kept_bytes_ += bytes.size();
  const std::uint64_t age = ++clock_;
  by_age_.emplace(age, key);
  kept_.emplace(key, Kept{std::move(name), std::move(bytes), age});
}

std::vector<std::uint8_t> ShardStreams::read(std::uint32_t shard, std::uint64_t ordinal,
                                             const std::string& name, std::uint64_t size) {
  const Key key{shard, ordinal};
  std::vector<std::uint8_t> bytes;
  if (take(key, name, &bytes)) return bytes;
  const std::shared_ptr<Stream> stream = acquire(shard);
  std::lock_guard<std::mutex> lock(stream->mutex);
  // Another reader may have passed it while this one waited for the stream.
  if (take(key, name, &bytes)) return bytes;
  const std::string& path = paths_[shard];
  if (!stream->archive || stream->next > ordinal) {
    stream->archive.reset();
    try {
      stream->archive = std::make_unique<ArchiveStream>(path, kBlockSize);
    } catch (const NotFound&) {
      throw FormatError(path + ":" + name + ": the shard has gone since the dataset was opened");
    }
    stream->next = 0;
  }
  TarMember member;
  try {
    for (;;) {
      if (!stream->archive->next(&member)) {
        throw FormatError(path + ":" + name +
                          ": the shard changed after it was indexed (it ends "
                          "before member " +
                          std::to_string(ordinal) + ")");
      }
      const std::uint64_t at = stream->next++;
      if (at == ordinal) break;
      if (member.regular && has_image_extension(member.name) && member.size <= memory_) {
        std::vector<std::uint8_t> passed;
        stream->archive->read(passed, member.size);
        keep({shard, at}, member.name, std::move(passed));
      }
    }
    if (member.name != name) {
      throw FormatError(path + ":" + name + ": the shard changed after it was indexed (member " +
                        std::to_string(ordinal) + " is now '" + member.name + "')");
    }
    stream->archive->read(bytes, size);
  } catch (const FormatError&) {
    stream->archive.reset();  // a stream that failed is read again from the start
    throw;
  }
  return bytes;
}

}  // namespace tlcore::internal
