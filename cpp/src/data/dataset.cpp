#include "tlcore/data/dataset.h"

#include <algorithm>
#include <utility>

#include "internal/checks.h"
#include "tlcore/error.h"

namespace tlcore {

std::vector<std::int64_t> Dataset::labels() const {
  const std::int64_t n = size();
  std::vector<std::int64_t> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = label(i);
  return out;
}

Subset::Subset(DatasetPtr parent, std::vector<std::int64_t> indices)
    : parent_(std::move(parent)), indices_(std::move(indices)) {
  if (!parent_) throw InvalidArgument("Subset: parent dataset is null");
  const std::int64_t n = parent_->size();
  for (std::int64_t index : indices_) {
    if (index < 0 || index >= n) {
      throw InvalidArgument("Subset: index " + std::to_string(index) +
                            " out of range for a dataset of " + std::to_string(n) + " samples");
    }
  }
}

std::int64_t Subset::size() const { return static_cast<std::int64_t>(indices_.size()); }

std::int64_t Subset::label(std::int64_t index) const { return parent_->label(parent_index(index)); }

const std::vector<std::string>& Subset::classes() const { return parent_->classes(); }

cv::Mat Subset::image(std::int64_t index, const DecodeOptions& options) const {
  return parent_->image(parent_index(index), options);
}

std::vector<std::uint8_t> Dataset::encoded(std::int64_t index) const {
  internal::check_index(index, size());
  return {};
}

std::vector<std::uint8_t> Subset::encoded(std::int64_t index) const {
  return parent_->encoded(parent_index(index));
}

std::string Subset::source(std::int64_t index) const {
  return parent_->source(parent_index(index));
}

std::vector<std::int64_t> Subset::shard_starts() const {
  const std::vector<std::int64_t> parent = parent_->shard_starts();
  if (parent.empty()) return {};
  std::vector<std::int64_t> starts;
  std::int64_t previous = -1;
  for (std::size_t i = 0; i < indices_.size(); ++i) {
    const auto shard = std::upper_bound(parent.begin(), parent.end(), indices_[i]) - parent.begin();
    if (shard != previous) starts.push_back(static_cast<std::int64_t>(i));
    previous = shard;
  }
  return starts;
}

std::int64_t Subset::parent_index(std::int64_t index) const {
  internal::check_index(index, size());
  return indices_[static_cast<std::size_t>(index)];
}

}  // namespace tlcore
