// The model spec, pipelines as data and the prediction rule, against their
// definitions: a round trip rebuilds the same ops (same outputs for the same
// draws), and decide() ranks and thresholds exactly as documented.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "tlcore/augment/ops.h"
#include "tlcore/augment/serialize.h"
#include "tlcore/error.h"
#include "tlcore/infer/prediction.h"
#include "tlcore/models/spec.h"

namespace tlcore {
namespace {

using nlohmann::json;

cv::Mat random_image(int height, int width, int channels) {
  cv::Mat image(height, width, CV_8UC(channels));
  cv::RNG rng(7);
  rng.fill(image, cv::RNG::UNIFORM, 0, 256);
  return image;
}

Pipeline every_op() {
  std::vector<OpPtr> ops{
      std::make_shared<Resize>(40),
      std::make_shared<Resize>(36, 30),
      std::make_shared<RandomResizedCrop>(28, 26, std::array<double, 2>{0.3, 0.9},
                                          std::array<double, 2>{0.5, 2.0}),
      std::make_shared<PadRandomCrop>(26, 24, 3, PadMode::kReflect),
      std::make_shared<RandomHorizontalFlip>(0.3),
      std::make_shared<RandomRotation>(-10.0, 25.0),
      std::make_shared<RandomZoom>(0.8, 1.3),
      std::make_shared<ColorJitter>(0.1, 0.2, 0.3),
      std::make_shared<Grayscale3>(),
      std::make_shared<RandomGrayscale>(0.2),
      std::make_shared<CenterCrop>(24)};
  return Pipeline(ops, 24, 24, {0.1f, 0.2f, 0.3f}, {0.4f, 0.5f, 0.6f}, 3);
}

TEST(PipelineJson, RoundTripReplaysEveryOp) {
  const Pipeline pipeline = every_op();
  const Pipeline again = pipeline_from_json(pipeline_to_json(pipeline), "test");
  EXPECT_EQ(again.repr(), pipeline.repr());
  EXPECT_EQ(pipeline_to_json(again), pipeline_to_json(pipeline));
  const cv::Mat image = random_image(50, 60, 3);
  for (std::uint64_t index = 0; index < 8; ++index) {
    Rng a(3, 1, index), b(3, 1, index);
    const cv::Mat x = pipeline.augment(image, a), y = again.augment(image, b);
    EXPECT_EQ(cv::norm(x, y, cv::NORM_INF), 0.0) << "draw " << index;
  }
}

TEST(PipelineJson, MeanAndStdSurviveBitForBit) {
  const Pipeline p({}, 8, 8, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}, 3);
  const Pipeline q = pipeline_from_text(pipeline_to_json(p).dump(), "test");
  EXPECT_EQ(q.mean(), p.mean());
  EXPECT_EQ(q.std(), p.std());
}

TEST(PipelineJson, BadSpecsNameTheSourceAndProblem) {
  auto message = [](const std::string& text) {
    try {
      pipeline_from_text(text, "m.tlc");
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto spec = pipeline_to_json(Pipeline::preset("imagenet-eval", 64));
  auto unknown = spec;
  unknown["ops"] = json::array({{{"op", "sharpen"}}});
  EXPECT_NE(message(unknown.dump()).find("m.tlc: unknown preprocessing op 'sharpen'"),
            std::string::npos);
  auto missing = spec;
  missing["ops"][0].erase("shorter");
  EXPECT_NE(message(missing.dump()).find("m.tlc"), std::string::npos);
  auto refused = spec;
  refused["ops"][1]["height"] = -3;  // CenterCrop refuses it: FormatError, not a crash
  EXPECT_NE(message(refused.dump()).find("m.tlc"), std::string::npos);
  EXPECT_NE(message("[1, 2").find("not JSON"), std::string::npos);
  auto channels = spec;
  channels["channels"] = 2;
  EXPECT_NE(message(channels.dump()).find("channels"), std::string::npos);
}

TEST(Decide, RanksTiesAndThresholdByDefinition) {
  const std::vector<std::string> classes{"a", "b", "c", "d"};
  const float probs[] = {0.1f, 0.4f, 0.1f, 0.4f};
  const auto p = decide(probs, 3.0, classes, 3, {});
  ASSERT_EQ(p.top_k.size(), 3u);
  EXPECT_EQ(p.top_k[0].first, "b");  // tie with "d": the lower index first
  EXPECT_EQ(p.top_k[1].first, "d");
  EXPECT_EQ(p.top_k[2].first, "a");
  EXPECT_EQ(p.label, "b");
  EXPECT_FALSE(p.unknown);
  EXPECT_FLOAT_EQ(static_cast<float>(p.confidence), 0.4f);
  EXPECT_DOUBLE_EQ(p.energy, 3.0);
  // Below the threshold: unknown, the ranking still reported.
  const auto q = decide(probs, 3.0, classes, 10, {0.5, std::nullopt});
  EXPECT_TRUE(q.unknown);
  EXPECT_EQ(q.label, kUnknownLabel);
  EXPECT_EQ(q.top_k.size(), 4u);
  // At the threshold exactly: known (the rule is "below").
  EXPECT_FALSE(decide(probs, 3.0, classes, 0, {0.4f, std::nullopt}).unknown);
  EXPECT_EQ(decide(probs, 3.0, classes, 0, {}).top_k.size(), 1u);
}

TEST(Decide, EnergyBelowItsFloorIsUnknownWhateverTheConfidence) {
  const std::vector<std::string> classes{"a", "b"};
  const float probs[] = {0.99f, 0.01f};
  EXPECT_TRUE(decide(probs, 2.0, classes, 1, {0.0, 2.5}).unknown);
  EXPECT_FALSE(decide(probs, 2.5, classes, 1, {0.0, 2.5}).unknown);  // at the floor: known
  EXPECT_FALSE(decide(probs, -1e9, classes, 1, {0.0, std::nullopt}).unknown);  // no floor
  // Either floor failing is enough.
  EXPECT_TRUE(decide(probs, 9.0, classes, 1, {0.995, 2.5}).unknown);
}

TEST(Decide, EnergyIsLogSumExpWithoutOverflow) {
  const float small[] = {0.5f, -1.0f, 2.0f};
  EXPECT_NEAR(energy(small, 3), std::log(std::exp(0.5) + std::exp(-1.0) + std::exp(2.0)), 1e-9);
  // exp(1000) overflows a double; logsumexp(1000, 1000) = 1000 + log 2.
  const float large[] = {1000.0f, 1000.0f};
  EXPECT_NEAR(energy(large, 2), 1000.0 + std::log(2.0), 1e-9);
  EXPECT_THROW(energy(large, 0), InvalidArgument);
}

models::ModelSpec mlp_spec() {
  models::ModelSpec s;
  s.arch = "simple_cnn";
  s.weights = "imagenet";
  s.classes = {"cat", "dog", "eel"};
  s.head = {"mlp", 0.3, {16, 8}};
  s.options.in_channels(1).input_size(28);
  s.pipeline = std::make_shared<const Pipeline>(Pipeline::preset("cifar-eval", 28, 1));
  s.threshold = 0.25;
  s.min_energy = 4.5;
  s.temperature = 1.5;
  s.provenance = {"0.1.0", "2026-11-27T00:00:00+00:00", "fashion", 60};
  s.recipe = R"([{"phase":"head","epochs":2}])";
  return s;
}

TEST(ModelSpec, JsonRoundTripKeepsEveryField) {
  const auto s = mlp_spec();
  const auto j = models::spec_to_json(s);
  EXPECT_EQ(j.at("recipe").at(0).at("epochs"), 2);  // nested data, not a string
  const auto t = models::spec_from_json(j, "test");
  EXPECT_EQ(models::spec_to_json(t), j);
  EXPECT_EQ(t.head.hidden, (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(t.options.input_size(), 28);
  EXPECT_DOUBLE_EQ(t.temperature, 1.5);
  EXPECT_EQ(t.min_energy, std::optional<double>(4.5));
  EXPECT_EQ(t.provenance.data_source, "fashion");
  // Files written before the energy rule have no floor: the threshold alone decides.
  auto old = j;
  old.erase("min_energy");
  EXPECT_FALSE(models::spec_from_json(old, "old.tlc").min_energy);
  old["min_energy"] = nullptr;
  EXPECT_FALSE(models::spec_from_json(old, "old.tlc").min_energy);
  old["min_energy"] = "high";
  EXPECT_THROW(models::spec_from_json(old, "old.tlc"), FormatError);
}

TEST(ModelSpec, BuildsTheArchitectureAndHead) {
  auto model = models::build_model(mlp_spec());
  EXPECT_EQ(model->num_classes(), 3);
  const auto logits = model->forward(torch::zeros({2, 1, 28, 28}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3}));
  int64_t linear_layers = 0;
  for (const auto& [name, t] : model->state_dict())
    if (name.rfind(model->head_name(), 0) == 0 && t.dim() == 2) ++linear_layers;
  EXPECT_EQ(linear_layers, 3);  // 16, 8, then the classes
}

TEST(ModelSpec, MissingOrBadEntriesAreFormatErrors) {
  auto j = models::spec_to_json(mlp_spec());
  j.erase("classes");
  EXPECT_THROW(models::spec_from_json(j, "m.tlc"), FormatError);
  auto k = models::spec_to_json(mlp_spec());
  k["temperature"] = 0.0;
  EXPECT_THROW(models::spec_from_json(k, "m.tlc"), FormatError);
  auto h = models::spec_to_json(mlp_spec());
  h["head"]["kind"] = "transformer";
  EXPECT_THROW(models::spec_from_json(h, "m.tlc"), FormatError);
}

TEST(ModelSpec, FormatOneUsesThePresetWithTheSavedStatistics) {
  const json v1 = {{"arch", "simple_cnn"},
                   {"classes", {"a", "b"}},
                   {"in_channels", 3},
                   {"head", {{"kind", "linear"}, {"dropout", 0.2}, {"hidden", json::array()}}},
                   {"preprocess",
                    {{"image_size", 64},
                     {"transform", "imagenet-eval"},
                     {"mean", {0.5, 0.5, 0.5}},
                     {"std", {0.2, 0.2, 0.2}},
                     {"channels", 3}}},
                   {"threshold", 0.4}};
  const auto s = models::spec_from_v1(v1, "old.tlc");
  const auto preset = Pipeline::preset("imagenet-eval", 64);
  ASSERT_EQ(s.pipeline->ops().size(), preset.ops().size());
  for (size_t i = 0; i < preset.ops().size(); ++i)
    EXPECT_EQ(s.pipeline->ops()[i]->repr(), preset.ops()[i]->repr());
  EXPECT_EQ(s.pipeline->mean(), (std::vector<float>{0.5f, 0.5f, 0.5f}));
  EXPECT_DOUBLE_EQ(s.threshold, 0.4);
  EXPECT_EQ(s.options.input_size(), 64);
}

}  // namespace
}  // namespace tlcore
