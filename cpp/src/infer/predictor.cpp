#include "tlcore/infer/predictor.h"

#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "tlcore/augment/rng.h"
#include "tlcore/data/decode.h"
#include "tlcore/device.h"
#include "tlcore/error.h"
#include "tlcore/memory.h"
#include "tlcore/models/inference.h"

namespace tlcore {
namespace {

using Clock = std::chrono::steady_clock;

struct Request {
  torch::Tensor input;                 // C x H x W, normalised
  std::promise<torch::Tensor> result;  // the raw logits
  Clock::time_point arrived;
};

void check(const PredictorOptions& o) {
  if (o.max_batch < 1) throw InvalidArgument("Predictor: max_batch must be >= 1");
  if (o.max_delay_ms < 0) throw InvalidArgument("Predictor: max_delay_ms must be >= 0");
  if (o.max_queue < 1) throw InvalidArgument("Predictor: max_queue must be >= 1");
  if (o.precision != "auto") models::parse_precision(o.precision);
}

}  // namespace

struct Predictor::Impl {
  std::shared_ptr<models::ModelImpl> model;
  models::ModelSpec spec;
  std::shared_ptr<const Pipeline> pipeline;
  PredictorOptions options;
  torch::Device device{torch::kCPU};
  std::optional<models::InferenceModel> compiled;  // CPU: BatchNorm folded, oneDNN
  std::string precision_note;

  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::unique_ptr<Request>> queue;
  bool stopping = false;
  PredictorStats stats;
  std::thread worker;

  torch::Tensor preprocess(const cv::Mat& image) const {
    Rng rng(0);  // eval pipelines draw nothing; a fixed seed keeps any other one repeatable
    const cv::Mat out = pipeline->augment(image, rng);
    auto x = torch::empty({pipeline->channels(), pipeline->out_height(), pipeline->out_width()});
    pipeline->normalize_into(out, x.data_ptr<float>());
    return x;
  }

  torch::Tensor input_of(const PredictorInput& in) const {
    if (in.data == nullptr) {
      const int channels = pipeline->channels();
      if (in.image.empty() || in.image.depth() != CV_8U || in.image.channels() != channels)
        throw InvalidArgument(in.source + ": expected an 8-bit image with " +
                              std::to_string(channels) + " channel(s)");
      if (std::int64_t(in.image.total()) > options.max_pixels)
        throw InvalidArgument(in.source + ": image over the limit of " +
                              std::to_string(options.max_pixels) + " pixels");
      return preprocess(in.image);
    }
    auto decode = pipeline->decode_options();
    decode.max_pixels = options.max_pixels;
    return preprocess(decode_image(in.data, in.size, decode, in.source));
  }

  // Queues every input at once (all or none: a full queue refuses the lot).
  std::vector<std::future<torch::Tensor>> submit(std::vector<torch::Tensor> inputs) {
    std::vector<std::future<torch::Tensor>> results;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (stopping) throw Error("Predictor: shutting down");
      if (queue.size() + inputs.size() > static_cast<std::size_t>(options.max_queue)) {
        ++stats.rejected;
        throw Overloaded("Predictor: queue full (" + std::to_string(queue.size()) +
                         " requests waiting); retry later");
      }
      for (auto& input : inputs) {
        auto request = std::make_unique<Request>();
        request->input = std::move(input);
        request->arrived = Clock::now();
        results.push_back(request->result.get_future());
        queue.push_back(std::move(request));
        ++stats.requests;
      }
    }
    wake.notify_one();
    return results;
  }

  torch::Tensor answer(torch::Tensor input) {
    std::vector<torch::Tensor> one;
    one.push_back(std::move(input));
    return submit(std::move(one)).front().get();
  }

  torch::Tensor forward(const torch::Tensor& batch) {
    c10::InferenceMode guard;
    if (compiled) return compiled->forward(batch);
    auto x = batch.to(device, /*non_blocking=*/true);
    if (x.dim() == 4) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    return model->forward(x).to(torch::kCPU);
  }

  void run() {
    const auto delay = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double, std::milli>(options.max_delay_ms));
    for (;;) {
      std::vector<std::unique_ptr<Request>> batch;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, nothing left to answer
        wake.wait_until(lock, queue.front()->arrived + delay, [&] {
          return stopping || static_cast<std::int64_t>(queue.size()) >= options.max_batch;
        });
        const auto n = std::min<std::size_t>(queue.size(), std::size_t(options.max_batch));
        for (std::size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
        ++stats.batches;
        ++stats.batch_sizes[static_cast<std::int64_t>(n)];
      }
      try {
        std::vector<torch::Tensor> inputs;
        inputs.reserve(batch.size());
        for (const auto& r : batch) inputs.push_back(r->input);
        auto stacked = torch::stack(inputs);
        if (device.is_cuda()) stacked = stacked.pin_memory();
        const auto logits = forward(stacked).to(torch::kFloat);
        for (std::size_t i = 0; i < batch.size(); ++i)
          batch[i]->result.set_value(logits[static_cast<std::int64_t>(i)].clone());
      } catch (...) {
        for (auto& r : batch) r->result.set_exception(std::current_exception());
      }
    }
  }
};

Predictor::Predictor(std::shared_ptr<models::ModelImpl> model, models::ModelSpec spec,
                     PredictorOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (!model) throw InvalidArgument("Predictor: no model given");
  keep_freed_memory();
  auto pipeline = spec.pipeline;
  if (!pipeline) throw InvalidArgument("Predictor: the model spec has no pipeline");
  if (!(spec.temperature > 0)) throw InvalidArgument("Predictor: temperature must be positive");
  check(options);
  if (model->in_channels() > 0 && model->in_channels() != pipeline->channels())
    throw InvalidArgument("Predictor: " + model->arch() + " takes " +
                          std::to_string(model->in_channels()) + " channels, the pipeline gives " +
                          std::to_string(pipeline->channels()));
  auto& s = *impl_;
  s.model = std::move(model);
  s.spec = std::move(spec);
  s.pipeline = std::move(pipeline);
  s.options = std::move(options);
  const bool cuda = resolve_device(s.options.device) == "cuda";
  s.model->eval();
  if (cuda) {
    s.device = torch::Device(torch::kCUDA);
    s.model->to(s.device);
  } else if (s.pipeline->out_height() == s.pipeline->out_width()) {
    const auto precision =
        models::resolve_precision(s.options.precision, s.spec.int8, &s.precision_note);
    s.compiled.emplace(s.model, s.pipeline->out_height(), models::InferenceOutput::kLogits, 0,
                       precision, s.spec.int8);
  }
  s.worker = std::thread([this] { impl_->run(); });
}

Predictor::~Predictor() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->worker.join();
}

Scores Predictor::predict(const std::uint8_t* data, std::size_t size, const std::string& source) {
  return scores_of(impl_->answer(impl_->input_of({data, size, {}, source})),
                   impl_->spec.temperature);
}

Scores Predictor::predict(const cv::Mat& image, const std::string& source) {
  return scores_of(impl_->answer(impl_->input_of({nullptr, 0, image, source})),
                   impl_->spec.temperature);
}

Scores Predictor::predict_many(const std::vector<PredictorInput>& inputs) {
  const auto classes = static_cast<int64_t>(impl_->spec.classes.size());
  if (inputs.empty()) return scores_of(torch::empty({0, classes}), impl_->spec.temperature);
  // Chunks that fill a few batches and stay within the queue, so that a long list
  // neither holds every decoded image at once nor overruns the queue.
  const auto chunk =
      static_cast<std::size_t>(std::min(impl_->options.max_queue, 4 * impl_->options.max_batch));
  std::vector<torch::Tensor> rows;
  rows.reserve(inputs.size());
  for (std::size_t begin = 0; begin < inputs.size(); begin += chunk) {
    const std::size_t n = std::min(chunk, inputs.size() - begin);
    std::vector<torch::Tensor> prepared(n);
    std::vector<std::exception_ptr> failures(n);
    // Decoding and preprocessing dominate for small models: spread them over the cores.
    at::parallel_for(0, static_cast<int64_t>(n), 1, [&](int64_t lo, int64_t hi) {
      for (auto i = static_cast<std::size_t>(lo); i < static_cast<std::size_t>(hi); ++i) {
        try {
          prepared[i] = impl_->input_of(inputs[begin + i]);
        } catch (...) {
          failures[i] = std::current_exception();
        }
      }
    });
    for (const auto& failure : failures)  // the first bad image in input order
      if (failure) std::rethrow_exception(failure);
    for (auto& result : impl_->submit(std::move(prepared))) rows.push_back(result.get());
  }
  return scores_of(torch::stack(rows), impl_->spec.temperature);
}

PredictorStats Predictor::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  PredictorStats s = impl_->stats;
  s.queue_depth = static_cast<std::int64_t>(impl_->queue.size());
  return s;
}

const PredictorOptions& Predictor::options() const { return impl_->options; }

const models::ModelSpec& Predictor::spec() const { return impl_->spec; }

std::string Predictor::device() const { return impl_->device.str(); }

std::string Predictor::precision() const {
  return impl_->compiled ? models::precision_name(impl_->compiled->precision()) : "fp32";
}

const std::string& Predictor::precision_note() const { return impl_->precision_note; }

}  // namespace tlcore
