// A labelled image source addressed by index. Implementations are immutable
// after construction, so the loader's worker threads may call image() at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "tlcore/data/decode.h"

namespace tlcore {

class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual std::int64_t size() const = 0;
  virtual std::int64_t label(std::int64_t index) const = 0;
  virtual const std::vector<std::string>& classes() const = 0;

  // Sample `index` as 8-bit HxWxC (C = options.channels), RGB order.
  virtual cv::Mat image(std::int64_t index, const DecodeOptions& options) const = 0;

  // Sample `index`'s image file as stored (JPEG, PNG, ...), so that data can be
  // copied without decoding and encoding again; empty for sources that store
  // pixels (CIFAR, IDX).
  virtual std::vector<std::uint8_t> encoded(std::int64_t index) const;

  // Where sample `index` comes from, for messages: a path, "archive.tar.gz:member",
  // or "data_batch_1.bin#17".
  virtual std::string source(std::int64_t index) const = 0;

  // All labels, in index order.
  std::vector<std::int64_t> labels() const;

  // For data stored in shards: the index where each shard's run of samples
  // begins (ascending, the first 0). Reading a run in order reads one file front
  // to back, so a loader shuffles runs and a window inside them (see
  // LoaderOptions::shuffle_buffer). Empty for data without shards.
  virtual std::vector<std::int64_t> shard_starts() const { return {}; }
};

using DatasetPtr = std::shared_ptr<const Dataset>;

// A view on a parent dataset through a list of indices (a split or a subset).
class Subset final : public Dataset {
 public:
  Subset(DatasetPtr parent, std::vector<std::int64_t> indices);

  std::int64_t size() const override;
  std::int64_t label(std::int64_t index) const override;
  const std::vector<std::string>& classes() const override;
  cv::Mat image(std::int64_t index, const DecodeOptions& options) const override;
  std::vector<std::uint8_t> encoded(std::int64_t index) const override;
  std::string source(std::int64_t index) const override;
  // Runs of consecutive indices that fall in one shard of the parent.
  std::vector<std::int64_t> shard_starts() const override;

  const std::vector<std::int64_t>& indices() const { return indices_; }

 private:
  std::int64_t parent_index(std::int64_t index) const;

  DatasetPtr parent_;
  std::vector<std::int64_t> indices_;
};

}  // namespace tlcore
