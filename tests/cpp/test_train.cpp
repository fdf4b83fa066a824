// The trainer and its parts against their definitions: scikit-learn's balanced
// class weights, the schedules' formulas, GradScaler's rule, and runs that must
// agree with each other (resumed vs uninterrupted, cached vs from the loader).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <stdexcept>
#include <thread>

#include "../../cpp/src/train/batchnorm_sync.h"
#include "../../cpp/src/train/feature_cache.h"
#include "../../cpp/src/train/mixed_precision.h"
#include "../../cpp/src/train/time_limit.h"
#include "data_fixtures.h"
#include "tlcore/error.h"
#include "tlcore/train/schedule.h"
#include "tlcore/train/trainer.h"
#include "train_fixtures.h"

namespace tlcore {
namespace {

using data_testing::error_of;
using data_testing::TempDir;
using namespace train_testing;

constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------- class weights

TEST(ClassWeights, BalancedAsScikitLearn) {
  // n = 6 samples, k = 3 classes, counts 3, 1, 2: w_c = n / (k * count_c).
  const auto w = balanced_class_weights({0, 0, 0, 1, 2, 2}, 3);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_DOUBLE_EQ(w[0], 6.0 / 9.0);
  EXPECT_DOUBLE_EQ(w[1], 2.0);
  EXPECT_DOUBLE_EQ(w[2], 1.0);
}

TEST(ClassWeights, AbsentClassWeighsNothingAndBadLabelsThrow) {
  const auto w = balanced_class_weights({0, 0, 2}, 3);
  EXPECT_DOUBLE_EQ(w[0], 3.0 / 6.0);
  EXPECT_DOUBLE_EQ(w[1], 0.0);
  EXPECT_DOUBLE_EQ(w[2], 1.0);
  EXPECT_EQ(error_of<InvalidArgument>([] {
              balanced_class_weights({0, 3}, 3);
            }),
            "class weights: label out of range");
  EXPECT_THROW(balanced_class_weights({-1}, 3), InvalidArgument);
}

// ---------------------------------------------------------------- schedules

TEST(Schedule, StepMultipliesByGammaEveryStepEpochs) {
  ScheduleOptions o;
  o.name = "step";
  o.step_epochs = 3;
  o.gamma = 0.1;
  // 10 steps an epoch: epoch = step / 10, factor = gamma^floor(epoch / 3).
  EXPECT_DOUBLE_EQ(lr_factor(o, 0, 100, 10), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(o, 29, 100, 10), 1.0);
  EXPECT_NEAR(lr_factor(o, 30, 100, 10), 0.1, 1e-12);
  EXPECT_NEAR(lr_factor(o, 65, 100, 10), 0.01, 1e-12);
}

TEST(Schedule, CosineFromOneToTheFloor) {
  ScheduleOptions o;
  o.name = "cosine";
  o.min_factor = 0.1;
  // factor(s) = min + (1 - min) * (1 + cos(pi * s / total)) / 2
  for (const std::int64_t s : {0, 25, 50, 80, 100}) {
    const double expected = 0.1 + 0.9 * (1 + std::cos(kPi * double(s) / 100)) / 2;
    EXPECT_NEAR(lr_factor(o, s, 100, 10), expected, 1e-12) << s;
  }
  EXPECT_NEAR(lr_factor(o, 50, 100, 10), 0.55, 1e-12);
}

TEST(Schedule, LinearWarmupFromWarmupStart) {
  ScheduleOptions o;
  o.warmup_epochs = 2;
  o.warmup_start = 0.1;
  // 5 steps an epoch: 10 warm-up steps rising linearly from 0.1 to 1.
  EXPECT_DOUBLE_EQ(lr_factor(o, 0, 50, 5), 0.1);
  EXPECT_NEAR(lr_factor(o, 5, 50, 5), 0.55, 1e-12);
  EXPECT_DOUBLE_EQ(lr_factor(o, 10, 50, 5), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(o, 40, 50, 5), 1.0);
}

TEST(Schedule, OneCycleAsTorchOneCycleLR) {
  ScheduleOptions o;
  o.name = "onecycle";
  o.pct_start = 0.3;
  o.div_factor = 25;
  o.final_div_factor = 1e4;
  // torch.optim.lr_scheduler.OneCycleLR (anneal_strategy="cos", three_phase=False)
  // with max_lr 1 over 100 steps: initial 1/25 rising to 1 at step 0.3 * 100 - 1 = 29,
  // then falling to initial / 1e4 at step 99; cos_anneal(a, b, p) = b + (a - b)(1 + cos(pi p)) / 2.
  auto anneal = [](double from, double to, double p) {
    return to + (from - to) * (1 + std::cos(kPi * p)) / 2;
  };
  const double initial = 1.0 / 25, last = initial / 1e4;
  EXPECT_NEAR(lr_factor(o, 0, 100, 10), initial, 1e-12);
  EXPECT_NEAR(lr_factor(o, 10, 100, 10), anneal(initial, 1.0, 10.0 / 29), 1e-12);
  EXPECT_NEAR(lr_factor(o, 29, 100, 10), 1.0, 1e-12);
  EXPECT_NEAR(lr_factor(o, 60, 100, 10), anneal(1.0, last, 31.0 / 70), 1e-12);
  EXPECT_NEAR(lr_factor(o, 99, 100, 10), last, 1e-15);
}

TEST(Schedule, UnknownNameThrows) {
  ScheduleOptions o;
  o.name = "linear";
  EXPECT_EQ(error_of<InvalidArgument>([&] { validate(o); }),
            "unknown learning-rate schedule 'linear' (known: constant, step, cosine, onecycle)");
}

// ---------------------------------------------------------------- mixed precision

TEST(MixedPrecision, ParsesTheAmpOption) {
  const torch::Device cpu(torch::kCPU);
  EXPECT_FALSE(detail::parse_amp("off", cpu).enabled);
  const auto bf16 = detail::parse_amp("bf16", cpu);
  EXPECT_TRUE(bf16.enabled);
  EXPECT_EQ(bf16.dtype, torch::kBFloat16);
  EXPECT_FALSE(bf16.scaled);
  EXPECT_EQ(error_of<InvalidArgument>([&] { detail::parse_amp("fp16", cpu); }),
            "amp 'fp16' needs a CUDA device (use 'bf16' on the CPU)");
  EXPECT_EQ(error_of<InvalidArgument>([&] { detail::parse_amp("fp8", cpu); }),
            "amp must be 'off', 'bf16' or 'fp16', got 'fp8'");
}

TEST(LossScaler, DisabledLeavesLossAndGradientsAlone) {
  detail::LossScaler scaler(false, torch::kCPU);
  const auto loss = torch::tensor(2.5);
  EXPECT_TRUE(torch::equal(scaler.scale(loss), loss));
  auto p = torch::ones({3}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({1.0f, std::nanf(""), 3.0f});
  EXPECT_TRUE(scaler.unscale({p}));  // nothing is checked without a scale
  scaler.update();
  EXPECT_EQ(scaler.value(), 1.0);
}

TEST(LossScaler, BacksOffOnOverflowAndGrowsAfterInterval) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "fp16 loss scaling runs on CUDA only";
  const torch::Device cuda(torch::kCUDA);
  detail::LossScaleOptions o;
  o.init_scale = 8;
  o.growth_interval = 3;
  detail::LossScaler scaler(true, cuda, o);
  auto p = torch::zeros({2}, torch::TensorOptions(cuda).requires_grad(true));
  auto finite_step = [&] {
    p.mutable_grad() = torch::full({2}, 16.0f, torch::TensorOptions(cuda));
    EXPECT_TRUE(scaler.unscale({p}));
    scaler.update();
  };
  auto overflow_step = [&] {
    p.mutable_grad() = torch::tensor({1.0f, INFINITY}, torch::TensorOptions(cuda));
    EXPECT_FALSE(scaler.unscale({p}));
    scaler.update();
  };
  EXPECT_DOUBLE_EQ(scaler.scale(torch::tensor(1.5f, torch::TensorOptions(cuda))).item<double>(),
                   12.0);
  finite_step();
  EXPECT_DOUBLE_EQ(p.grad()[0].item<double>(), 16.0 / 8);  // unscaled: divided by the scale
  finite_step();
  EXPECT_DOUBLE_EQ(scaler.value(), 8);
  finite_step();  // the third finite step in a row: growth_factor 2
  EXPECT_DOUBLE_EQ(scaler.value(), 16);
  overflow_step();  // backoff_factor 0.5, and the run of finite steps starts again
  EXPECT_DOUBLE_EQ(scaler.value(), 8);
  finite_step();
  finite_step();
  EXPECT_DOUBLE_EQ(scaler.value(), 8);
  finite_step();
  EXPECT_DOUBLE_EQ(scaler.value(), 16);
}

// ---------------------------------------------------------------- BatchNorm across ranks

// Rank 0 of two, where the other rank's summand is a fixed value.
class TwoRankGroup final : public ProcessGroup {
 public:
  explicit TwoRankGroup(float other) : other_(other) {}
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  double timeout_s() const override { return 1; }
  std::string backend() const override { return "test"; }
  std::unique_ptr<Pending> all_reduce_sum_async(at::Tensor& t, const std::string&) override {
    t.add_(other_);
    return std::make_unique<Done>();
  }
  void broadcast(at::Tensor&, int, const std::string&) override {}

 private:
  struct Done final : Pending {
    void wait() override {}
  };
  float other_;
};

TEST(BatchNormSync, AveragesRunningStatisticsOverRanks) {
  auto model = tiny_cnn(3, 1);
  model->train();
  model->forward(torch::randn({4, 3, 8, 8}));  // running statistics away from 0 and 1
  std::map<std::string, torch::Tensor> before;
  for (const auto& [name, t] : model->state_dict()) before[name] = t.clone();
  TwoRankGroup group(/*other=*/2.0f);
  detail::average_batchnorm_statistics(*model, group);
  int averaged = 0;
  for (const auto& [name, t] : model->state_dict()) {
    const bool statistic = name.find("running_mean") != std::string::npos ||
                           name.find("running_var") != std::string::npos;
    if (statistic) {
      EXPECT_TRUE(torch::allclose(t, (before[name] + 2.0f) / 2, 1e-6, 1e-6)) << name;
      ++averaged;
    } else {
      EXPECT_TRUE(torch::equal(t, before[name])) << name;
    }
  }
  EXPECT_EQ(averaged, 4);  // mean and variance of two BatchNorm layers
}

// ---------------------------------------------------------------- fit

FitOptions small_fit(std::int64_t epochs) {
  FitOptions o;
  o.epochs = epochs;
  o.optimizer.lr = 0.01;
  o.seed = 5;
  return o;
}

TEST(Fit, RejectsContradictoryOptions) {
  auto data = std::make_shared<ColourDataset>(16, 3, 8);
  Trainer trainer(tiny_cnn(3, 1), make_loader(data, 8, true), nullptr);
  auto fit_error = [&](const std::function<void(FitOptions&)>& change) {
    FitOptions o = small_fit(1);
    change(o);
    return error_of<InvalidArgument>([&] { trainer.fit(o); });
  };
  EXPECT_EQ(fit_error([](FitOptions& o) { o.label_smoothing = 1; }),
            "label_smoothing must be in [0, 1)");
  EXPECT_EQ(fit_error([](FitOptions& o) {
              o.class_weights = {1, 2};
            }),
            "class_weights has 2 entries for 3 classes");
  EXPECT_EQ(fit_error([](FitOptions& o) { o.patience = 2; }),
            "early stopping needs validation data");
  EXPECT_EQ(fit_error([](FitOptions& o) { o.cache_flip = true; }),
            "cache_flip needs cache_features");
  EXPECT_EQ(fit_error([](FitOptions& o) { o.cache_shift = 1; }),
            "cache_shift needs cache_features");
  EXPECT_EQ(fit_error([](FitOptions& o) { o.cache_shift = -1; }), "cache_shift must be >= 0");
  EXPECT_EQ(fit_error([](FitOptions& o) { o.cache_features = true; }),
            "cache_features needs the backbone, or its leading blocks, frozen; "
            "'features.1.1.bias' is trainable and no leading block is frozen");
}

TEST(FeatureCache, ShiftedMapsMoveEachSampleAndFillWithZeros) {
  const auto maps = torch::arange(2 * 3 * 4 * 5, torch::kFloat).reshape({2, 3, 4, 5}) + 1;
  const std::vector<std::array<std::int64_t, 2>> offsets{{1, -2}, {-2, 0}};
  const auto moved = detail::shifted_maps(maps, offsets, 2);
  ASSERT_EQ(moved.sizes(), maps.sizes());
  // The definition: out[n, c, y, x] = maps[n, c, y - dy, x - dx], zero outside the map.
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t c = 0; c < 3; ++c)
      for (std::int64_t y = 0; y < 4; ++y)
        for (std::int64_t x = 0; x < 5; ++x) {
          const auto sy = y - offsets[n][0], sx = x - offsets[n][1];
          const bool inside = sy >= 0 && sy < 4 && sx >= 0 && sx < 5;
          const float want = inside ? maps[n][c][sy][sx].item<float>() : 0.0f;
          EXPECT_EQ(moved[n][c][y][x].item<float>(), want) << n << c << y << x;
        }
}

TEST(TimeLimit, EpochsThatFitThePaceSoFar) {
  using detail::epochs_within;
  EXPECT_EQ(epochs_within(0, 100, 10, 1, 20), 20);     // no limit
  EXPECT_EQ(epochs_within(100, 30, 10, 1, 20), 8);     // 70 s left: 7 more epochs of 10 s
  EXPECT_EQ(epochs_within(100, 30, 10, 1, 5), 5);      // never more than asked for
  EXPECT_EQ(epochs_within(100, 120, 10, 3, 20), 3);    // over already: what is done
  EXPECT_EQ(epochs_within(100, 95.5, 4.5, 2, 20), 3);  // exactly one more fits
  EXPECT_EQ(epochs_within(100, 30, 10, 20, 20), 20);
}

TEST(TimeLimit, ThePaceLeavesOutTheFirstEpochAndLooksAtTheLastThree) {
  using detail::epoch_pace;
  EXPECT_EQ(epoch_pace({}), 0);
  EXPECT_EQ(epoch_pace({88}), 88);                  // all there is
  EXPECT_EQ(epoch_pace({88, 55}), 55);              // the warm-up aside
  EXPECT_EQ(epoch_pace({88, 55, 57, 52}), 57);      // the slowest of the last three
  EXPECT_EQ(epoch_pace({88, 70, 55, 57, 52}), 57);  // a slow moment passes
  EXPECT_EQ(epoch_pace({50, 52, 90}), 90);          // a slowdown now counts at once
}

TEST(Fit, TimeLimitCutsTheEpochs) {
  auto data = std::make_shared<ColourDataset>(16, 3, 8);
  Trainer trainer(tiny_cnn(3, 1), make_loader(data, 8, true), nullptr);
  FitOptions o = small_fit(50);
  o.time_limit = 0.9;
  // Two batches of 0.1 s at least: an epoch takes 0.2 s, so 4 fit, and the first shows it.
  const FitResult r = trainer.fit(o, nullptr, [](std::int64_t, std::int64_t, double) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  });
  EXPECT_GE(r.history.size(), 3u);
  EXPECT_LE(r.history.size(), 4u);
  EXPECT_FALSE(r.stopped_early);
  EXPECT_EQ(r.history.back().epochs, std::int64_t(r.history.size()));
  FitOptions bad = small_fit(1);
  bad.time_limit = -1;
  EXPECT_EQ(error_of<InvalidArgument>([&] { trainer.fit(bad); }), "time_limit must be >= 0");
}

TEST(Fit, TimeLimitGrowsTheEpochsBackAfterASlowFirstEpoch) {
  auto data = std::make_shared<ColourDataset>(16, 3, 8);
  Trainer trainer(tiny_cnn(3, 1), make_loader(data, 8, true), nullptr);
  FitOptions o = small_fit(50);
  o.time_limit = 2.2;
  // The first epoch's two batches take 0.4 s each, the rest 0.05: after the first, one more
  // epoch fits at its pace; at the later pace, 10 or more.
  int batches = 0;
  const FitResult r = trainer.fit(o, nullptr, [&](std::int64_t, std::int64_t, double) {
    std::this_thread::sleep_for(std::chrono::milliseconds(batches++ < 2 ? 400 : 50));
  });
  EXPECT_EQ(r.history.front().epochs, 2);
  EXPECT_GE(r.history.size(), 6u);
  EXPECT_LT(r.history.size(), 50u);
}

// The optimizer's state travels too: momentum, Adam's moments and step count.
class ResumeWith : public ::testing::TestWithParam<const char*> {};

TEST_P(ResumeWith, ResumedRunEndsWithTheUninterruptedRunsWeights) {
  FitOptions base = small_fit(3);
  base.optimizer.name = GetParam();
  auto data = std::make_shared<ColourDataset>(24, 3, 8);
  auto run = [&](models::Model model, const FitOptions& o, const EpochCallback& on_epoch) {
    Trainer trainer(model, make_loader(data, 8, true), make_loader(data, 8, false));
    return trainer.fit(o, on_epoch);
  };
  auto uninterrupted = tiny_cnn(3, 1);
  const FitResult expected = run(uninterrupted, base, nullptr);

  TempDir dir;
  FitOptions o = base;
  o.checkpoint = dir / "fit.ckpt";
  // Killed in the second epoch's callback: the checkpoint holds the first epoch only.
  EXPECT_THROW(run(tiny_cnn(3, 1), o,
                   [](const EpochStats& s) {
                     if (s.epoch == 1) throw std::runtime_error("killed");
                     return true;
                   }),
               std::runtime_error);
  auto resumed = tiny_cnn(3, 2);  // other initial weights: the checkpoint's must win
  const FitResult result = run(resumed, o, nullptr);

  EXPECT_TRUE(result.resumed);
  ASSERT_EQ(result.history.size(), 3u);
  for (std::size_t e = 0; e < 3; ++e) {
    EXPECT_NEAR(result.history[e].train_loss, expected.history[e].train_loss, 1e-6) << e;
    EXPECT_NEAR(result.history[e].val_loss, expected.history[e].val_loss, 1e-6) << e;
  }
  EXPECT_EQ(result.best_epoch, expected.best_epoch);
  EXPECT_LT(max_difference(weights_of(*resumed), weights_of(*uninterrupted)), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, ResumeWith, ::testing::Values("adam", "adamw", "sgd"));

TEST(Fit, EarlyStoppingRestoresTheBestEpochsWeights) {
  // Validation labels disagree with the images: the better the model learns the
  // training set, the worse its validation loss.
  auto train = std::make_shared<ColourDataset>(24, 3, 8);
  auto val = std::make_shared<ColourDataset>(24, 3, 8, /*label_shift=*/1);
  auto model = tiny_cnn(3, 1);
  Trainer trainer(model, make_loader(train, 8, true), make_loader(val, 8, false));
  FitOptions o = small_fit(6);
  o.optimizer.lr = 0.05;
  o.monitor = "val_loss";
  o.patience = 2;
  std::vector<std::vector<torch::Tensor>> after;  // the weights after each epoch
  const FitResult r = trainer.fit(o, [&](const EpochStats&) {
    after.push_back(weights_of(*model));
    return true;
  });

  ASSERT_EQ(after.size(), r.history.size());
  // The best epoch is the first with the lowest validation loss.
  std::int64_t best = 0;
  for (std::size_t e = 1; e < r.history.size(); ++e)
    if (r.history[e].val_loss < r.history[std::size_t(best)].val_loss) best = std::int64_t(e);
  EXPECT_EQ(r.best_epoch, best);
  // Patience 2: training stops two epochs after the best, unless the epochs run out first.
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(std::int64_t(r.history.size()), best + 1 + o.patience);
  EXPECT_GT(max_difference(after.back(), after[std::size_t(best)]), 1e-4);
  EXPECT_EQ(max_difference(weights_of(*model), after[std::size_t(best)]), 0.0);
}

// Trains `model` with and without the feature cache from the same start.
void expect_cache_matches_slow_path(const std::function<models::Model()>& make, int size,
                                    std::int64_t epochs, double lr, double tolerance) {
  auto train = std::make_shared<ColourDataset>(20, 3, size);
  auto val = std::make_shared<ColourDataset>(12, 3, size);
  std::vector<FitResult> results;
  std::vector<std::vector<torch::Tensor>> weights;
  for (const bool cache : {false, true}) {
    auto model = make();
    Trainer trainer(model, make_loader(train, size, true), make_loader(val, size, false));
    FitOptions o = small_fit(epochs);
    // SGD: Adam's update divides by the gradient's size, so it would magnify the
    // float rounding by which the two paths may differ for near-zero gradients.
    o.optimizer.name = "sgd";
    o.optimizer.lr = lr;
    o.cache_features = cache;
    // Eager frozen blocks: compiling them traces with torch::rand, and the slow path
    // compiles during its first batch, after the epoch's dropout seed, so its dropout
    // masks would differ from the cached run's (which compiled before the seed).
    o.compile_frozen = false;
    results.push_back(trainer.fit(o));
    weights.push_back(weights_of(*model));
  }
  for (std::size_t e = 0; e < std::size_t(epochs); ++e) {
    EXPECT_NEAR(results[1].history[e].train_loss, results[0].history[e].train_loss, tolerance);
    EXPECT_NEAR(results[1].history[e].val_loss, results[0].history[e].val_loss, tolerance);
    EXPECT_EQ(results[1].history[e].val_accuracy, results[0].history[e].val_accuracy);
  }
  EXPECT_LT(max_difference(weights[1], weights[0]), tolerance);
}

TEST(Fit, CachedEmbeddingsTrainTheHeadLikeTheLoader) {
  expect_cache_matches_slow_path(
      [] {
        auto m = tiny_cnn(3, 1);
        m->freeze_backbone();
        return m;
      },
      8, 3, 0.05, 1e-4);
}

TEST(Fit, CachedFeatureMapsTrainTheTailLikeTheLoader) {
  // mobilenet_v2 can be cut after its frozen leading blocks: the cache holds feature maps.
  expect_cache_matches_slow_path(
      [] {
        torch::manual_seed(1);
        auto m = models::create_model("mobilenet_v2", 3);
        m->freeze_backbone();
        m->unfreeze_last(1);
        // Untrained, the tail's pre-activations sit at ReLU6's kink at 0 (and the
        // embeddings near 0, where dropout hides nothing): start them at 1.
        torch::NoGradGuard no_grad;
        m->named_parameters()["features.18.1.bias"].fill_(1.0);
        return m;
      },
      32, 2, 0.002, 1e-4);
}

}  // namespace
}  // namespace tlcore
