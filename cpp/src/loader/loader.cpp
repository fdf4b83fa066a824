#include "tlcore/loader.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <opencv2/core/utility.hpp>

#include "epoch_order.h"
#include "tlcore/augment/rng.h"
#include "tlcore/error.h"
#include "tlcore/threads.h"

namespace tlcore {

class Loader::Impl {
 public:
  Impl(DatasetPtr dataset, PipelinePtr pipeline, LoaderOptions options)
      : dataset_(std::move(dataset)), pipeline_(std::move(pipeline)), options_(options) {
    if (!dataset_) throw InvalidArgument("Loader: dataset is null");
    if (!pipeline_) throw InvalidArgument("Loader: pipeline is null");
    if (options_.batch_size <= 0)
      throw InvalidArgument("Loader: batch_size must be positive, got " +
                            std::to_string(options_.batch_size));
    if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size)
      throw InvalidArgument("Loader: rank " + std::to_string(options_.rank) +
                            " is outside world_size " + std::to_string(options_.world_size));
    if (options_.prefetch < 1) throw InvalidArgument("Loader: prefetch must be >= 1");
    if (options_.shuffle_buffer < 0) throw InvalidArgument("Loader: shuffle_buffer must be >= 0");
    if (dataset_->size() == 0) throw InvalidArgument("Loader: the dataset is empty");
    if (options_.num_workers <= 0) options_.num_workers = num_threads();
    // Workers already run one per core; OpenCV's own pool on top would only
    // oversubscribe the cores that training also needs.
    cv::setNumThreads(1);
    pin_ = options_.pin_memory && at::hasCUDA();
    decode_ = pipeline_->decode_options();
    shard_starts_ = dataset_->shard_starts();
    const auto n = dataset_->size();
    const int w = options_.world_size;
    samples_ = w == 1 ? n : (options_.drop_last ? n / w : (n + w - 1) / w);
    batches_ = options_.drop_last ? samples_ / options_.batch_size
                                  : (samples_ + options_.batch_size - 1) / options_.batch_size;
  }

  ~Impl() { stop(); }

  std::vector<std::int64_t> epoch_indices(std::int64_t epoch) const {
    auto order = internal::epoch_order(dataset_->size(), shard_starts_, options_, epoch);
    order.resize(static_cast<std::size_t>(std::min(samples_, batches_ * options_.batch_size)));
    return order;
  }

  void start_epoch(std::int64_t epoch) {
    stop();
    order_ = epoch_indices(epoch);
    epoch_ = epoch;
    next_claim_ = 0;
    next_deliver_ = 0;
    ready_.clear();
    stopping_ = false;
    started_ = true;
    const int workers = static_cast<int>(
        std::min<std::int64_t>(options_.num_workers, std::max<std::int64_t>(batches_, 1)));
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }

  std::optional<Batch> next() {
    if (!started_) throw Error("Loader: call start_epoch() before next()");
    std::unique_lock<std::mutex> lock(mutex_);
    if (next_deliver_ >= batches_) return std::nullopt;
    delivered_.wait(lock, [&] { return ready_.count(next_deliver_) > 0; });
    auto node = ready_.extract(next_deliver_);
    ++next_deliver_;
    claimable_.notify_all();
    Slot slot = std::move(node.mapped());
    lock.unlock();
    if (slot.error) std::rethrow_exception(slot.error);
    if (pin_) {
      // Pinned here, in the caller's thread, from torch's caching host allocator: it
      // tracks asynchronous copies to the GPU before reusing a block, which the
      // workers' buffer pool could not.
      slot.batch.images = slot.batch.images.pin_memory();
      slot.batch.labels = slot.batch.labels.pin_memory();
    }
    return std::move(slot.batch);
  }

  std::int64_t num_batches() const { return batches_; }
  std::int64_t num_samples() const { return samples_; }
  std::int64_t skipped() const { return skipped_.load(); }
  const LoaderOptions& options() const { return options_; }
  const Dataset& dataset() const { return *dataset_; }
  const Pipeline& pipeline() const { return *pipeline_; }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  // A batch buffer from the pool when the caller has let go of an earlier one.
  // Batches of ImageNet size are tens of MB: glibc hands such blocks out as
  // fresh mmaps, and faulting their pages in (on a VM especially) cost more
  // than decoding and augmenting the whole batch.
  at::Tensor take_buffer(at::IntArrayRef shape) {
    {
      std::lock_guard<std::mutex> lock(pool_mutex_);
      for (auto& t : pool_) {
        if (t.use_count() == 1 && t.storage().use_count() == 1 && t.sizes() == shape) {
          at::Tensor out = t;
          return out;
        }
      }
    }
    at::Tensor t = at::empty(shape, options_.uint8_output ? at::kByte : at::kFloat);
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (pool_.size() < kMaxPool) pool_.push_back(t);
    return t;
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    claimable_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  void work() {
    const std::int64_t window = static_cast<std::int64_t>(options_.num_workers) * options_.prefetch;
    for (;;) {
      std::int64_t b;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        claimable_.wait(lock, [&] {
          return stopping_ || next_claim_ >= batches_ || next_claim_ < next_deliver_ + window;
        });
        if (stopping_ || next_claim_ >= batches_) return;
        b = next_claim_++;
      }
      Slot slot;
      try {
        slot.batch = make_batch(b);
      } catch (...) {
        slot.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.emplace(b, std::move(slot));
      }
      delivered_.notify_all();
    }
  }

  Batch make_batch(std::int64_t b) {
    const std::int64_t begin = b * options_.batch_size;
    const std::int64_t count = std::min(options_.batch_size, samples_ - begin);
    const int c = pipeline_->channels();
    const int h = pipeline_->out_height();
    const int w = pipeline_->out_width();
    const std::int64_t plane = static_cast<std::int64_t>(c) * h * w;
    at::Tensor images = take_buffer({count, c, h, w});
    at::Tensor labels = at::empty({count}, at::kLong);
    at::Tensor indices = at::empty({count}, at::kLong);
    auto* label_ptr = labels.data_ptr<std::int64_t>();
    auto* index_ptr = indices.data_ptr<std::int64_t>();
    std::int64_t kept = 0;
    for (std::int64_t k = 0; k < count; ++k) {
      const std::int64_t index = order_[static_cast<std::size_t>(begin + k)];
      cv::Mat image;
      try {
        image = dataset_->image(index, decode_);
      } catch (const FormatError&) {
        if (!options_.skip_corrupt) throw;
        ++skipped_;
        continue;
      }
      Rng rng(options_.seed, static_cast<std::uint64_t>(epoch_), static_cast<std::uint64_t>(index));
      const cv::Mat out = pipeline_->augment(image, rng);
      if (options_.uint8_output) {
        pipeline_->copy_into(out, images.data_ptr<std::uint8_t>() + kept * plane);
      } else {
        pipeline_->normalize_into(out, images.data_ptr<float>() + kept * plane);
      }
      label_ptr[kept] = dataset_->label(index);
      index_ptr[kept] = index;
      ++kept;
    }
    if (kept < count) {
      images = images.narrow(0, 0, kept);
      labels = labels.narrow(0, 0, kept);
      indices = indices.narrow(0, 0, kept);
    }
    return Batch{images, labels, indices};
  }

  DatasetPtr dataset_;
  PipelinePtr pipeline_;
  LoaderOptions options_;
  DecodeOptions decode_;
  bool pin_ = false;
  std::int64_t samples_ = 0;
  std::int64_t batches_ = 0;

  std::vector<std::int64_t> order_;
  std::vector<std::int64_t> shard_starts_;
  std::int64_t epoch_ = 0;
  bool started_ = false;

  std::mutex mutex_;
  std::condition_variable claimable_;
  std::condition_variable delivered_;
  bool stopping_ = false;
  std::int64_t next_claim_ = 0;
  std::int64_t next_deliver_ = 0;
  std::map<std::int64_t, Slot> ready_;
  std::vector<std::thread> threads_;
  std::atomic<std::int64_t> skipped_{0};

  static constexpr std::size_t kMaxPool = 16;
  std::mutex pool_mutex_;
  std::vector<at::Tensor> pool_;
};

Loader::Loader(DatasetPtr dataset, PipelinePtr pipeline, LoaderOptions options)
    : impl_(std::make_unique<Impl>(std::move(dataset), std::move(pipeline), options)) {}
Loader::~Loader() = default;
void Loader::start_epoch(std::int64_t epoch) { impl_->start_epoch(epoch); }
std::optional<Batch> Loader::next() { return impl_->next(); }
std::vector<std::int64_t> Loader::epoch_indices(std::int64_t epoch) const {
  return impl_->epoch_indices(epoch);
}
std::int64_t Loader::num_batches() const { return impl_->num_batches(); }
std::int64_t Loader::num_samples() const { return impl_->num_samples(); }
std::int64_t Loader::skipped() const { return impl_->skipped(); }
const LoaderOptions& Loader::options() const { return impl_->options(); }
const Dataset& Loader::dataset() const { return impl_->dataset(); }
const Pipeline& Loader::pipeline() const { return impl_->pipeline(); }

}  // namespace tlcore
