#include <gtest/gtest.h>
#include <torch/torch.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "tlcore/error.h"
#include "tlcore/models/checkpoint.h"
#include "tlcore/models/inference.h"
#include "tlcore/models/registry.h"
#include "tlcore/models/torchscript.h"

namespace tlcore::models {
namespace {

namespace fs = std::filesystem;

std::map<std::string, std::vector<int64_t>> shapes(const ModelImpl& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& [name, t] : m.state_dict()) out[name] = t.sizes().vec();
  return out;
}

// A temp folder removed with the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "tlcore-models-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(ModelRegistry, ListsEveryArchitecture) {
  const auto names = model_names();
  const std::set<std::string> have(names.begin(), names.end());
  for (const char* arch : {"resnet18",           "resnet34",
                           "resnet50",           "resnet101",
                           "resnet152",          "vgg11",
                           "vgg11_bn",           "vgg13",
                           "vgg13_bn",           "vgg16",
                           "vgg16_bn",           "vgg19",
                           "vgg19_bn",           "mobilenet_v2",
                           "mobilenet_v3_small", "mobilenet_v3_large",
                           "efficientnet_b0",    "efficientnet_b1",
                           "efficientnet_b2",    "efficientnet_b3",
                           "simple_cnn",         "mlp"}) {
    EXPECT_TRUE(have.count(arch)) << arch;
  }
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
}

TEST(ModelRegistry, UnknownNameListsKnownOnes) {
  const auto msg = error_of([] { create_model("resnet51"); });
  EXPECT_NE(msg.find("unknown model 'resnet51'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resnet50"), std::string::npos) << msg;
  EXPECT_THROW(create_model("resnet51"), InvalidArgument);
}

TEST(ModelRegistry, DuplicateRegistrationThrows) {
  EXPECT_THROW(
      register_model("resnet18",
                     [](int64_t n, const ModelOptions& o) { return create_model("mlp", n, o); }),
      InvalidArgument);
  register_model("test_tiny_mlp", [](int64_t n, const ModelOptions&) {
    return create_model("mlp", n, ModelOptions().input_size(4).widths({8}));
  });
  EXPECT_THROW(
      register_model("test_tiny_mlp",
                     [](int64_t n, const ModelOptions& o) { return create_model("mlp", n, o); }),
      InvalidArgument);
  EXPECT_EQ(create_model("test_tiny_mlp", 3)->forward(torch::rand({2, 3, 4, 4})).sizes(),
            (std::vector<int64_t>{2, 3}));
}

TEST(ModelRegistry, RejectsKnobsAnArchitectureLacks) {
  EXPECT_THROW(create_model("resnet18", 10, ModelOptions().in_channels(1)), InvalidArgument);
  EXPECT_THROW(create_model("resnet18", 0), InvalidArgument);
  EXPECT_THROW(create_model("mlp", 10, ModelOptions().widths({0})), InvalidArgument);
}

// Names, shapes and counts below are torchvision 0.14's (state_dict() and the
// num_params of its weight metadata).
TEST(ModelNames, MatchTorchvision) {
  struct Case {
    const char* arch;
    size_t entries;
    int64_t params;
  };
  for (const Case& c :
       {Case{"resnet18", 122, 11689512}, Case{"mobilenet_v2", 314, 3504872},
        Case{"efficientnet_b0", 360, 5288548}, Case{"mobilenet_v3_small", 244, 2542856},
        Case{"vgg11_bn", 62, 132868840}}) {
    auto m = create_model(c.arch);
    EXPECT_EQ(m->state_dict().size(), c.entries) << c.arch;
    EXPECT_EQ(m->parameter_count(), c.params) << c.arch;
  }
  auto r = shapes(*create_model("resnet18"));
  EXPECT_EQ(r.at("conv1.weight"), (std::vector<int64_t>{64, 3, 7, 7}));
  EXPECT_EQ(r.at("layer2.0.downsample.0.weight"), (std::vector<int64_t>{128, 64, 1, 1}));
  EXPECT_EQ(r.at("layer1.0.bn1.num_batches_tracked"), (std::vector<int64_t>{}));
  EXPECT_EQ(r.at("fc.weight"), (std::vector<int64_t>{1000, 512}));
  auto mb = shapes(*create_model("mobilenet_v2"));
  EXPECT_EQ(mb.at("features.1.conv.0.0.weight"), (std::vector<int64_t>{32, 1, 3, 3}));
  EXPECT_EQ(mb.at("features.1.conv.1.weight"), (std::vector<int64_t>{16, 32, 1, 1}));
  EXPECT_EQ(mb.at("features.18.0.weight"), (std::vector<int64_t>{1280, 320, 1, 1}));
  EXPECT_EQ(mb.at("classifier.1.weight"), (std::vector<int64_t>{1000, 1280}));
  // PyTorch's order: a module's parameters, then its buffers, depth first.
  const auto sd = create_model("resnet18")->state_dict();
  EXPECT_EQ(sd[0].first, "conv1.weight");
  EXPECT_EQ(sd[3].first, "bn1.running_mean");
  EXPECT_EQ(sd.back().first, "fc.bias");
}

TEST(ModelNames, BlocksCoverTheBackbone) {
  // One of each structure (deeper ResNets and VGGs only repeat their blocks).
  for (const char* arch :
       {"resnet18", "resnet50", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_small",
        "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b3", "simple_cnn", "mlp"}) {
    auto m = create_model(arch, 5);
    for (const auto& p : m->named_parameters()) {
      bool covered = has_prefix(p.key(), m->head_name());
      for (const auto& b : m->blocks()) {
        for (const auto& prefix : b.prefixes) covered = covered || has_prefix(p.key(), prefix);
      }
      EXPECT_TRUE(covered) << arch << ": " << p.key();
    }
  }
  std::vector<std::string> names;
  const auto resnet = create_model("resnet50");
  for (const auto& b : resnet->blocks()) names.push_back(b.name);
  EXPECT_EQ(names, (std::vector<std::string>{"stem", "layer1", "layer2", "layer3", "layer4"}));
  EXPECT_EQ(create_model("mobilenet_v2")->blocks().size(), 19u);
  EXPECT_EQ(create_model("efficientnet_b0")->blocks().back().name, "features.8");
}

TEST(ModelShapes, EmbeddingAndLogits) {
  torch::NoGradGuard no_grad;
  const std::map<std::string, int64_t> dims{{"resnet18", 512},         {"resnet50", 2048},
                                            {"mobilenet_v2", 1280},    {"mobilenet_v3_small", 1024},
                                            {"efficientnet_b2", 1408}, {"vgg11", 4096},
                                            {"simple_cnn", 128},       {"mlp", 256}};
  for (const auto& [arch, dim] : dims) {
    auto m = create_model(arch, 7);
    m->eval();
    EXPECT_EQ(m->embedding_dim(), dim) << arch;
    const auto x = torch::rand({2, 3, 32, 32});
    EXPECT_EQ(m->embed(x).sizes(), (std::vector<int64_t>{2, dim})) << arch;
    EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 7})) << arch;
  }
  auto gray = create_model("simple_cnn", 10, ModelOptions().in_channels(1).widths({8, 16}));
  EXPECT_EQ(gray->forward(torch::rand({3, 1, 28, 28})).sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_THROW(gray->forward(torch::rand({3, 3, 28, 28})), InvalidArgument);
  EXPECT_THROW(create_model("mlp")->forward(torch::rand({1, 3, 28, 28})), InvalidArgument);
  EXPECT_THROW(create_model("resnet18")->forward(torch::rand({3, 32, 32})), InvalidArgument);
}

TEST(ModelPreprocess, FollowsTorchvisionWeights) {
  const auto r = create_model("resnet50")->preprocess();
  EXPECT_EQ(r.input_size, 224);
  EXPECT_EQ(r.resize_size, 256);
  EXPECT_EQ(r.interpolation, "bilinear");
  EXPECT_DOUBLE_EQ(r.mean[0], 0.485);
  EXPECT_DOUBLE_EQ(r.std[2], 0.225);
  const auto e = create_model("efficientnet_b3")->preprocess();
  EXPECT_EQ(e.input_size, 300);
  EXPECT_EQ(e.resize_size, 320);
  EXPECT_EQ(e.interpolation, "bicubic");
  EXPECT_EQ(create_model("simple_cnn", 2, ModelOptions().in_channels(1))->preprocess().mean.size(),
            1u);
}

TEST(ModelHeads, ReplacesTheClassifier) {
  auto m = create_model("resnet18");
  m->set_head(HeadOptions(4).kind(HeadKind::kMlp).hidden({256, 128}).dropout(0.3));
  auto s = shapes(*m);
  EXPECT_EQ(s.count("fc.weight"), 0u);
  EXPECT_EQ(s.at("fc.0.weight"), (std::vector<int64_t>{256, 512}));
  EXPECT_EQ(s.at("fc.3.weight"), (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(s.at("fc.6.weight"), (std::vector<int64_t>{4, 128}));
  EXPECT_EQ(m->num_classes(), 4);
  m->eval();
  EXPECT_EQ(m->forward(torch::rand({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 4}));

  auto v = create_model("vgg11");
  v->set_head(HeadOptions(3).kind(HeadKind::kDropoutLinear));
  s = shapes(*v);
  EXPECT_EQ(s.at("classifier.6.1.weight"), (std::vector<int64_t>{3, 4096}));
  EXPECT_EQ(s.at("classifier.3.weight"), (std::vector<int64_t>{4096, 4096}));
  EXPECT_THROW(m->set_head(HeadOptions(4).kind(HeadKind::kMlp)), InvalidArgument);
  EXPECT_THROW(m->set_head(HeadOptions(0)), InvalidArgument);
}

TEST(ModelFreezing, CountsAndBatchNorm) {
  auto m = create_model("resnet18", 10);
  const int64_t total = m->parameter_count();
  const int64_t head = 512 * 10 + 10;
  const int64_t layer4 = 8393728;  // torchvision resnet18().layer4
  EXPECT_EQ(m->trainable_parameter_count(), total);
  m->freeze_backbone();
  EXPECT_EQ(m->trainable_parameter_count(), head);
  m->unfreeze_last(1);
  EXPECT_EQ(m->trainable_parameter_count(), head + layer4);
  EXPECT_TRUE(m->is_frozen("layer3"));
  EXPECT_FALSE(m->is_frozen("layer4"));
  m->train();
  for (const auto& mod : m->named_modules("", false)) {
    if (mod.value()->as<torch::nn::BatchNorm2d>() == nullptr) continue;
    EXPECT_EQ(mod.value()->is_training(), has_prefix(mod.key(), "layer4")) << mod.key();
  }
  // A training-mode forward leaves frozen running statistics alone.
  const auto stats = m->named_buffers()["layer1.0.bn1.running_mean"].clone();
  const auto live = m->named_buffers()["layer4.0.bn1.running_mean"].clone();
  m->forward(torch::rand({2, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(stats, m->named_buffers()["layer1.0.bn1.running_mean"]));
  EXPECT_FALSE(torch::equal(live, m->named_buffers()["layer4.0.bn1.running_mean"]));
  m->unfreeze_all();
  EXPECT_EQ(m->trainable_parameter_count(), total);
  m->train();
  EXPECT_TRUE(m->named_modules()["layer1.0.bn1"]->is_training());
  EXPECT_THROW(m->unfreeze_last(6), InvalidArgument);
  EXPECT_THROW(m->is_frozen("layer5"), InvalidArgument);
}

TEST(ModelCheckpoint, RoundTrip) {
  TempDir dir;
  torch::manual_seed(0);
  auto a = create_model("mobilenet_v3_small", 6);
  {
    torch::NoGradGuard no_grad;
    for (auto& b : a->buffers()) {
      if (b.is_floating_point()) b.uniform_(0.5, 1.5);
    }
  }
  const auto path = dir.file("m.pt");
  save_state_dict(a->state_dict(), path);
  const auto back = read_state_dict(path);
  const auto orig = a->state_dict();
  ASSERT_EQ(back.size(), orig.size());
  for (size_t k = 0; k < orig.size(); ++k) {
    EXPECT_EQ(back[k].first, orig[k].first);
    EXPECT_TRUE(torch::equal(back[k].second, orig[k].second)) << orig[k].first;
  }
  auto b = create_model("mobilenet_v3_small", 6);
  EXPECT_TRUE(load_checkpoint(*b, path).empty());
  a->eval();
  b->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::rand({2, 3, 64, 64});
  EXPECT_TRUE(torch::allclose(a->forward(x), b->forward(x)));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(ModelCheckpoint, HeadOfAnotherClassCount) {
  TempDir dir;
  auto a = create_model("resnet18", 1000);
  const auto path = dir.file("r.pt");
  save_state_dict(a->state_dict(), path);
  auto b = create_model("resnet18", 5);
  const auto fresh = b->named_parameters()["fc.weight"].clone();
  const auto msg = error_of([&] { load_checkpoint(*b, path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("fc.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("drop_head"), std::string::npos) << msg;
  const auto dropped = load_checkpoint(*b, path, LoadOptions().drop_head(true));
  EXPECT_EQ(dropped, (std::vector<std::string>{"fc.bias", "fc.weight"}));
  EXPECT_TRUE(torch::equal(b->named_parameters()["fc.weight"], fresh));
  EXPECT_TRUE(
      torch::equal(b->named_parameters()["conv1.weight"], a->named_parameters()["conv1.weight"]));
  // A head that fits is loaded even with drop_head.
  auto c = create_model("resnet18", 1000);
  EXPECT_TRUE(load_checkpoint(*c, path, LoadOptions().drop_head(true)).empty());
  EXPECT_TRUE(torch::equal(c->named_parameters()["fc.weight"], a->named_parameters()["fc.weight"]));
}

TEST(ModelCheckpoint, BadFilesGiveClearErrors) {
  TempDir dir;
  auto m = create_model("resnet18");
  EXPECT_THROW(load_checkpoint(*m, dir.file("missing.pth")), NotFound);
  const auto junk = dir.file("junk.pth");
  std::ofstream(junk) << "not a checkpoint at all";
  EXPECT_THROW(read_state_dict(junk), FormatError);
  // A truncated archive.
  const auto good = dir.file("good.pth");
  save_state_dict(create_model("mlp", 2, ModelOptions().input_size(4))->state_dict(), good);
  const auto size = fs::file_size(good);
  fs::copy_file(good, dir.file("cut.pth"));
  fs::resize_file(dir.file("cut.pth"), size / 2);
  EXPECT_THROW(read_state_dict(dir.file("cut.pth")), FormatError);
  // Another architecture's file: every problem listed, the file named.
  const auto msg = error_of([&] { load_checkpoint(*m, good); });
  EXPECT_NE(msg.find(good), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layers.0.weight"), std::string::npos) << msg;
  EXPECT_THROW(load_checkpoint(*m, good), InvalidArgument);
  // Non-strict loads what matches, still rejecting shape mismatches.
  auto mlp = create_model("mlp", 2, ModelOptions().input_size(4).widths({16}));
  EXPECT_THROW(load_checkpoint(*mlp, good, LoadOptions().strict(false)), InvalidArgument);
}

fs::path shared_dir() {
  if (const char* env = std::getenv("TLCORE_SHARED")) return env;
  // This file lives in <repo>/tests/cpp; shared data sits beside the repository.
  return fs::path(__FILE__).parent_path() / ".." / ".." / ".." / "shared";
}

TEST(ModelCheckpoint, ReadsTorchvisionFile) {
  const auto path = shared_dir() / "weights" / "mobilenet_v2-imagenet-dequantized.pth";
  if (!fs::exists(path)) GTEST_SKIP() << "shared weights not found at " << path;
  auto m = create_model("mobilenet_v2");
  EXPECT_TRUE(load_checkpoint(*m, path.string()).empty());
  EXPECT_THROW(load_checkpoint(*create_model("mobilenet_v3_small"), path.string()),
               InvalidArgument);
}

TEST(ModelTorchScript, CustomBackbone) {
  const auto path = shared_dir() / "weights" / "mobilenet_v2-imagenet-int8-torchscript.pt";
  if (!fs::exists(path)) GTEST_SKIP() << "shared weights not found at " << path;
  try {
    auto m = load_torchscript_backbone(path.string(), 3);
    EXPECT_EQ(m->embedding_dim(), 1000);
    m->eval();
    torch::NoGradGuard no_grad;
    EXPECT_EQ(m->forward(torch::rand({2, 3, 224, 224})).sizes(), (std::vector<int64_t>{2, 3}));
  } catch (const c10::Error& e) {
    // Debian's torch 1.13 oneDNN quantized kernels reject this int8 file on some CPUs.
    if (std::string(e.what()).find("primitive descriptor") == std::string::npos) throw;
    GTEST_SKIP() << "this torch build cannot run the int8 TorchScript file here: "
                 << e.what_without_backtrace();
  }
  EXPECT_THROW(read_state_dict(path.string()), InvalidArgument);
  EXPECT_THROW(load_torchscript_backbone("/nonexistent.pt", 3), NotFound);
}

TEST(ModelInference, MatchesEagerWithoutAutograd) {
  torch::manual_seed(5);
  auto model = create_model("resnet18", 4);
  {
    torch::NoGradGuard no_grad;
    for (auto& b : model->buffers()) {
      if (b.is_floating_point()) b.uniform_(0.5, 1.5);
    }
  }
  model->eval();
  const auto x = torch::rand({3, 3, 64, 64});
  torch::Tensor expected, embedding;
  {
    torch::NoGradGuard no_grad;
    expected = model->forward(x);
    embedding = model->embed(x);
  }
  const InferenceModel fast(model.ptr(), 64);
  const auto got = fast.forward(x);
  EXPECT_FALSE(got.requires_grad());
  EXPECT_LE((got - expected).abs().max().item<double>(), 1e-3);
  const InferenceModel features(model.ptr(), 64, InferenceOutput::kEmbedding);
  EXPECT_LE((features.forward(x) - embedding).abs().max().item<double>(), 1e-3);
  EXPECT_THROW(fast.forward(torch::rand({3, 3, 32, 32})), InvalidArgument);
  EXPECT_THROW(fast.forward(torch::rand({3, 1, 64, 64})), InvalidArgument);
}

// Sums a tensor over `world` threads, as an all-reduce sums it over ranks: every
// thread calls it in the same order and gets the same sum.
class ThreadAllReduce {
 public:
  explicit ThreadAllReduce(int world) : world_(world) {}
  void operator()(torch::Tensor& t) {
    std::unique_lock<std::mutex> lock(mutex_);
    const int64_t round = round_;
    sum_ = arrived_ == 0 ? t.clone() : sum_ + t;
    if (++arrived_ == world_) {
      result_ = sum_;
      arrived_ = 0;
      ++round_;
      done_.notify_all();
    } else {
      done_.wait(lock, [&] { return round_ != round; });
    }
    t.copy_(result_);
  }

 private:
  int world_;
  int arrived_ = 0;
  int64_t round_ = 0;
  torch::Tensor sum_, result_;
  std::mutex mutex_;
  std::condition_variable done_;
};

Model small_cnn() {
  torch::manual_seed(0);
  auto model =
      create_model("simple_cnn", 4, ModelOptions().input_size(12).widths({6, 8}).dropout(0.0));
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  return model;
}

// One training step of `model` on (x, y): logits, and the gradients by name.
std::pair<torch::Tensor, std::map<std::string, torch::Tensor>> step(Model model,
                                                                    const torch::Tensor& x,
                                                                    const torch::Tensor& y) {
  model->train();
  auto logits = model->forward(x);
  torch::nn::functional::cross_entropy(logits, y).backward();
  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : model->named_parameters()) grads[p.key()] = p.value().grad().clone();
  return {logits.detach(), grads};
}

TEST(SyncBatchNorm, TwoHalvesTrainLikeTheWholeBatch) {
  torch::manual_seed(1);
  // Like photos: many equal pixels (ties in max-pooling), channels_last as the trainer runs.
  const auto x = (torch::relu(torch::randn({8, 3, 12, 12})) * 4)
                     .round()
                     .contiguous(torch::MemoryFormat::ChannelsLast);
  const auto y = torch::randint(0, 4, {8});
  auto whole = small_cnn();
  const auto [logits, grads] = step(whole, x, y);

  for (const bool sync : {true, false}) {
    std::vector<Model> ranks{small_cnn(), small_cnn()};
    ThreadAllReduce all_reduce(2);
    for (auto& m : ranks)
      EXPECT_EQ(m->sync_batchnorm(sync ? models::AllReduceSum(std::ref(all_reduce))
                                       : models::AllReduceSum()),
                2);
    std::vector<std::pair<torch::Tensor, std::map<std::string, torch::Tensor>>> out(2);
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r)
      threads.emplace_back(
          [&, r] { out[r] = step(ranks[r], x.narrow(0, 4 * r, 4), y.narrow(0, 4 * r, 4)); });
    for (auto& t : threads) t.join();
    const auto both = torch::cat({out[0].first, out[1].first});
    if (!sync) {
      EXPECT_GT((both - logits).abs().max().item<double>(), 1e-3) << "per-half statistics differ";
      continue;
    }
    EXPECT_TRUE(torch::allclose(both, logits, 1e-4, 1e-5)) << (both - logits).abs().max();
    // Each half's loss is a mean over 4: the average of the two gradients is the whole batch's.
    for (const auto& [name, g] : grads) {
      const auto averaged = (out[0].second.at(name) + out[1].second.at(name)) / 2;
      EXPECT_TRUE(torch::allclose(averaged, g, 1e-4, 1e-6))
          << name << " " << (averaged - g).abs().max();
    }
    const auto expected = whole->state_dict();
    for (int r = 0; r < 2; ++r) {
      const auto state = ranks[r]->state_dict();
      for (std::size_t i = 0; i < state.size(); ++i)
        EXPECT_TRUE(torch::allclose(state[i].second.to(torch::kDouble),
                                    expected[i].second.to(torch::kDouble), 1e-5, 1e-6))
            << state[i].first;
    }
  }
}

}  // namespace
}  // namespace tlcore::models
