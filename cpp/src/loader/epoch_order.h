// Which samples an epoch visits, in which order, on which rank (private to the loader).
#pragma once

#include <cstdint>
#include <vector>

#include "tlcore/loader.h"

namespace tlcore::internal {

// This rank's dataset indices for `epoch`, before drop_last trims the last batch.
// Unsharded data (or shuffle_buffer 0): one permutation of every index drawn from
// (seed, epoch), then DistributedSampler's split (every world_size-th sample,
// padded by wrapping around or cut with drop_last).
// Sharded data (`shard_starts` not empty): the shards in an order drawn from
// (seed, epoch), their samples in storage order, cut into world_size
// contiguous blocks (padded or cut as above), so each rank reads whole shards
// but the two at its block's edges; each block is then shuffled through a
// buffer of options.shuffle_buffer samples.
std::vector<std::int64_t> epoch_order(std::int64_t size,
                                      const std::vector<std::int64_t>& shard_starts,
                                      const LoaderOptions& options, std::int64_t epoch);

}  // namespace tlcore::internal
