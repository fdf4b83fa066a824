// GradientReducer: DistributedDataParallel's bucketed gradient all-reduce,
// overlapping communication with the rest of backward.
#include <torch/torch.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "tlcore/error.h"
#include "tlcore/train/distributed.h"

namespace tlcore {

class GradientReducer::Impl {
 public:
  struct Slot {
    at::Tensor param;
    std::size_t bucket;
    std::int64_t offset, numel;
    unsigned hook;
    bool ready = false;
  };
  struct Bucket {
    at::Tensor flat;
    std::size_t slots = 0, ready = 0;
    std::unique_ptr<ProcessGroup::Pending> work;
  };

  std::shared_ptr<ProcessGroup> group;
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  std::size_t next_launch = 0;
  std::mutex mutex;

  // Buckets start in index order on every rank: collectives must match across ranks.
  void launch_ready() {
    while (next_launch < buckets.size() &&
           buckets[next_launch].ready == buckets[next_launch].slots) {
      auto& b = buckets[next_launch];
      b.work = group->all_reduce_sum_async(
          b.flat, "all-reduce of gradient bucket " + std::to_string(next_launch));
      ++next_launch;
    }
  }

  void on_grad(std::size_t i, const at::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mutex);
    auto& s = slots[i];
    auto segment = buckets[s.bucket].flat.narrow(0, s.offset, s.numel);
    if (s.ready) {
      segment.add_(grad.reshape({-1}));
      return;
    }
    segment.copy_(grad.reshape({-1}));
    s.ready = true;
    ++buckets[s.bucket].ready;
    launch_ready();
  }
};

GradientReducer::GradientReducer(std::shared_ptr<ProcessGroup> group,
                                 std::vector<at::Tensor> params, std::int64_t bucket_bytes)
    : impl_(std::make_unique<Impl>()) {
  if (!group) throw InvalidArgument("GradientReducer: no process group");
  auto& s = *impl_;
  s.group = std::move(group);
  // Backward reaches the last layers first.
  std::reverse(params.begin(), params.end());
  std::int64_t bytes = 0;
  std::vector<std::int64_t> sizes;
  for (auto& p : params) {
    const std::int64_t nbytes = p.numel() * static_cast<std::int64_t>(p.element_size());
    const bool same_kind = !s.slots.empty() && s.slots.back().param.dtype() == p.dtype() &&
                           s.slots.back().param.device() == p.device();
    if (s.slots.empty() || !same_kind || bytes + nbytes > bucket_bytes) {
      s.buckets.emplace_back();
      sizes.push_back(0);
      bytes = 0;
    }
    Impl::Slot slot;
    slot.param = p;
    slot.bucket = s.buckets.size() - 1;
    slot.offset = sizes.back();
    slot.numel = p.numel();
    slot.hook = 0;
    sizes.back() += p.numel();
    bytes += nbytes;
    ++s.buckets.back().slots;
    s.slots.push_back(std::move(slot));
  }
  for (std::size_t b = 0; b < s.buckets.size(); ++b) {
    const auto& first = *std::find_if(s.slots.begin(), s.slots.end(),
                                      [&](const Impl::Slot& x) { return x.bucket == b; });
    s.buckets[b].flat = torch::zeros({sizes[b]}, first.param.options().requires_grad(false));
  }
  Impl* impl = impl_.get();
  for (std::size_t i = 0; i < s.slots.size(); ++i)
    s.slots[i].hook = s.slots[i].param.register_hook(
        [impl, i](const at::Tensor& grad) { impl->on_grad(i, grad); });
}

GradientReducer::~GradientReducer() {
  for (auto& s : impl_->slots) s.param.remove_hook(s.hook);
}

void GradientReducer::finish() {
  auto& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    // Parameters backward did not reach contribute zeros, so every rank still joins every bucket.
    for (auto& slot : s.slots) {
      if (slot.ready) continue;
      s.buckets[slot.bucket].flat.narrow(0, slot.offset, slot.numel).zero_();
      slot.ready = true;
      ++s.buckets[slot.bucket].ready;
    }
    s.launch_ready();
  }
  const double world = static_cast<double>(s.group->world_size());
  torch::NoGradGuard no_grad;
  for (auto& b : s.buckets) {
    b.work->wait();
    b.work.reset();
    b.flat.div_(world);
    b.ready = 0;
  }
  for (auto& slot : s.slots) {
    auto average =
        s.buckets[slot.bucket].flat.narrow(0, slot.offset, slot.numel).view(slot.param.sizes());
    auto& grad = slot.param.mutable_grad();
    if (grad.defined()) {
      grad.copy_(average);
    } else {
      grad = torch::empty_like(slot.param).copy_(average);  // keeps channels_last
    }
    slot.ready = false;
  }
  s.next_launch = 0;
}

std::int64_t GradientReducer::num_buckets() const {
  return static_cast<std::int64_t>(impl_->buckets.size());
}

}  // namespace tlcore
