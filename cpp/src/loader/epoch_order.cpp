#include "epoch_order.h"

#include <algorithm>
#include <utility>

#include "tlcore/augment/rng.h"

namespace tlcore::internal {
namespace {

// Salts that keep these streams apart from every sample's augmentation stream
// (which uses the dataset index in the same slot) and from each other.
constexpr std::uint64_t kShuffleStream = 0x53485546464c45ULL;
constexpr std::uint64_t kShardStream = 0x5348415244530000ULL;
constexpr std::uint64_t kBufferStream = 0x4255464645520000ULL;

// Fisher-Yates by hand: std::shuffle's algorithm differs between standard libraries.
void shuffle_in_place(std::vector<std::int64_t>& values, Rng& rng) {
  for (auto i = static_cast<std::int64_t>(values.size()) - 1; i > 0; --i) {
    std::swap(values[static_cast<std::size_t>(i)],
              values[static_cast<std::size_t>(rng.integer(0, i))]);
  }
}

std::int64_t samples_per_rank(std::int64_t n, const LoaderOptions& options) {
  const int w = options.world_size;
  return options.drop_last ? n / w : (n + w - 1) / w;
}

// DistributedSampler's split: every world_size-th sample.
std::vector<std::int64_t> strided_split(const std::vector<std::int64_t>& order,
                                        const LoaderOptions& options) {
  if (options.world_size == 1) return order;
  const auto n = static_cast<std::int64_t>(order.size());
  std::vector<std::int64_t> out;
  for (std::int64_t k = 0; k < samples_per_rank(n, options); ++k) {
    out.push_back(order[static_cast<std::size_t>((k * options.world_size + options.rank) % n)]);
  }
  return out;
}

// This rank's contiguous block of `order`, wrapping around to pad the last one.
std::vector<std::int64_t> block_split(const std::vector<std::int64_t>& order,
                                      const LoaderOptions& options) {
  if (options.world_size == 1) return order;
  const auto n = static_cast<std::int64_t>(order.size());
  const std::int64_t per_rank = samples_per_rank(n, options);
  std::vector<std::int64_t> out;
  for (std::int64_t k = 0; k < per_rank; ++k) {
    out.push_back(order[static_cast<std::size_t>((options.rank * per_rank + k) % n)]);
  }
  return out;
}

// WebDataset's shuffle buffer: each incoming sample replaces a random one of the
// `size` held, which goes out; the last ones leave in random order.
std::vector<std::int64_t> buffer_shuffle(const std::vector<std::int64_t>& in, std::int64_t size,
                                         Rng& rng) {
  std::vector<std::int64_t> out, held;
  out.reserve(in.size());
  held.reserve(static_cast<std::size_t>(std::min<std::int64_t>(size, in.size())));
  for (const std::int64_t index : in) {
    if (static_cast<std::int64_t>(held.size()) < size) {
      held.push_back(index);
      continue;
    }
    std::int64_t& slot = held[static_cast<std::size_t>(rng.integer(0, size - 1))];
    out.push_back(slot);
    slot = index;
  }
  shuffle_in_place(held, rng);
  out.insert(out.end(), held.begin(), held.end());
  return out;
}

}  // namespace

std::vector<std::int64_t> epoch_order(std::int64_t size,
                                      const std::vector<std::int64_t>& shard_starts,
                                      const LoaderOptions& options, std::int64_t epoch) {
  const auto e = static_cast<std::uint64_t>(epoch);
  if (shard_starts.empty() || options.shuffle_buffer <= 0) {
    std::vector<std::int64_t> order(static_cast<std::size_t>(size));
    for (std::int64_t i = 0; i < size; ++i) order[static_cast<std::size_t>(i)] = i;
    if (options.shuffle) {
      Rng rng(options.seed, e, kShuffleStream);
      shuffle_in_place(order, rng);
    }
    return strided_split(order, options);
  }
  std::vector<std::int64_t> shards(shard_starts.size());
  for (std::size_t s = 0; s < shards.size(); ++s) shards[s] = static_cast<std::int64_t>(s);
  if (options.shuffle) {
    Rng rng(options.seed, e, kShardStream);
    shuffle_in_place(shards, rng);
  }
  std::vector<std::int64_t> order;
  order.reserve(static_cast<std::size_t>(size));
  for (const std::int64_t s : shards) {
    const std::int64_t end = static_cast<std::size_t>(s) + 1 < shard_starts.size()
                                 ? shard_starts[static_cast<std::size_t>(s) + 1]
                                 : size;
    for (std::int64_t i = shard_starts[static_cast<std::size_t>(s)]; i < end; ++i)
      order.push_back(i);
  }
  std::vector<std::int64_t> block = block_split(order, options);
  if (!options.shuffle) return block;
  Rng rng(options.seed, e, kBufferStream + static_cast<std::uint64_t>(options.rank));
  return buffer_shuffle(block, options.shuffle_buffer, rng);
}

}  // namespace tlcore::internal
