// The Predictor against the model it serves: its probabilities are the softmax of
// the model's own forward pass over the spec's pipeline (divided by the spec's
// temperature) and its energy the logsumexp of the raw logits, whether images come one by one,
// concurrently or as one list; concurrent requests share batches; a full queue and a bad image are
// refused with the documented errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <thread>
#include <vector>

#include "tlcore/augment/rng.h"
#include "tlcore/error.h"
#include "tlcore/infer/predictor.h"
#include "tlcore/models/spec.h"

namespace tlcore {
namespace {

models::ModelSpec spec(double temperature = 1.0) {
  models::ModelSpec s;
  s.arch = "simple_cnn";
  s.classes = {"a", "b", "c", "d"};
  s.options.input_size(32);
  s.pipeline = std::make_shared<const Pipeline>(Pipeline::preset("imagenet-eval", 32));
  s.temperature = temperature;
  return s;
}

cv::Mat image(int seed) {
  cv::Mat m(48, 40, CV_8UC3);
  cv::RNG rng(static_cast<std::uint64_t>(seed));
  rng.fill(m, cv::RNG::UNIFORM, 0, 256);
  return m;
}

// Oracle: the eager model's logits on the pipeline's output.
torch::Tensor eager_logits(models::Model& model, const models::ModelSpec& s, const cv::Mat& input) {
  Rng rng(0);
  const auto& p = *s.pipeline;
  auto x = torch::empty({1, 3, p.out_height(), p.out_width()});
  p.normalize_into(p.augment(input, rng), x.data_ptr<float>());
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(x)[0];
}

PredictorOptions cpu(std::int64_t max_batch = 8, double max_delay_ms = 0) {
  PredictorOptions o;
  o.device = "cpu";
  o.max_batch = max_batch;
  o.max_delay_ms = max_delay_ms;
  return o;
}

TEST(Predictor, ScoresAreTheModelsSoftmaxWithTemperatureAndLogSumExp) {
  torch::manual_seed(0);
  for (double temperature : {1.0, 2.5}) {
    auto s = spec(temperature);
    auto model = models::build_model(s);
    Predictor predictor(model.ptr(), s, cpu());
    for (int seed = 0; seed < 3; ++seed) {
      const auto got = predictor.predict(image(seed), "image");
      const auto logits = eager_logits(model, s, image(seed));
      EXPECT_TRUE(
          torch::allclose(got.probabilities, torch::softmax(logits / temperature, 0), 1e-4, 1e-5))
          << "temperature " << temperature << " image " << seed;
      // The energy ignores the temperature: it is the raw logits' logsumexp.
      EXPECT_NEAR(got.energy.item<double>(), torch::logsumexp(logits, 0).item<double>(), 1e-4);
    }
  }
}

TEST(Predictor, ManyAtOnceEqualsOneByOneAndEncodedEqualsDecoded) {
  torch::manual_seed(1);
  auto s = spec();
  auto model = models::build_model(s);
  Predictor predictor(model.ptr(), s, cpu(4));
  std::vector<std::vector<uchar>> png(10);
  std::vector<PredictorInput> inputs(10);
  for (int i = 0; i < 10; ++i) {
    cv::Mat bgr;
    cv::cvtColor(image(i), bgr, cv::COLOR_RGB2BGR);
    cv::imencode(".png", bgr, png[static_cast<size_t>(i)]);
    inputs[static_cast<size_t>(i)] = {
        png[static_cast<size_t>(i)].data(), png[static_cast<size_t>(i)].size(), {}, "img"};
  }
  const auto many = predictor.predict_many(inputs);
  ASSERT_EQ(many.probabilities.sizes(), (std::vector<int64_t>{10, 4}));
  ASSERT_EQ(many.energy.sizes(), (std::vector<int64_t>{10}));
  for (int i = 0; i < 10; ++i) {
    const auto one = predictor.predict(image(i), "decoded");
    EXPECT_TRUE(torch::allclose(many.probabilities[i], one.probabilities, 1e-5, 1e-6));
    EXPECT_NEAR(many.energy[i].item<double>(), one.energy.item<double>(), 1e-5);
  }
  EXPECT_EQ(predictor.predict_many({}).probabilities.size(0), 0);
}

TEST(Predictor, ConcurrentRequestsShareBatches) {
  auto s = spec();
  Predictor predictor(models::build_model(s).ptr(), s, cpu(8, 200));
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i)
    clients.emplace_back([&predictor, i] { predictor.predict(image(i), "client"); });
  for (auto& c : clients) c.join();
  const auto stats = predictor.stats();
  EXPECT_EQ(stats.requests, 8);
  EXPECT_LT(stats.batches, 8);  // 200 ms is ample for 8 threads to queue together
}

TEST(Predictor, BadImagesAndAFullQueueAreRefused) {
  auto s = spec();
  Predictor predictor(models::build_model(s).ptr(), s, cpu());
  const std::string junk = "not an image at all";
  try {
    predictor.predict(reinterpret_cast<const std::uint8_t*>(junk.data()), junk.size(), "up.jpg");
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("up.jpg"), std::string::npos);
  }
  EXPECT_THROW(predictor.predict(cv::Mat(8, 8, CV_8UC1), "grey"), InvalidArgument);

  PredictorOptions tight = cpu(1, 0);
  tight.max_queue = 2;
  Predictor small(models::build_model(s).ptr(), s, tight);
  std::vector<PredictorInput> three(3, PredictorInput{nullptr, 0, image(0), "x"});
  small.predict_many(three);  // a long list goes in chunks that fit the queue
  EXPECT_EQ(small.stats().rejected, 0);
  PredictorOptions bad = cpu();
  bad.max_batch = 0;
  EXPECT_THROW(Predictor(models::build_model(s).ptr(), s, bad), InvalidArgument);
  bad = cpu();
  bad.device = "tpu";
  EXPECT_THROW(Predictor(models::build_model(s).ptr(), s, bad), InvalidArgument);
}

}  // namespace
}  // namespace tlcore
