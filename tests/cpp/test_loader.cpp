#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <algorithm>
#include <set>

#include "tlcore/augment/pipeline.h"
#include "tlcore/error.h"
#include "tlcore/loader.h"

namespace tlcore {
namespace {

// Sample i is a solid image whose pixels all equal i % 256, labelled i % classes;
// a pixel therefore tells which sample landed in which batch slot.
class SolidDataset final : public Dataset {
 public:
  SolidDataset(std::int64_t n, std::int64_t classes, std::int64_t corrupt_every = 0)
      : n_(n), corrupt_every_(corrupt_every) {
    for (std::int64_t c = 0; c < classes; ++c) names_.push_back("c" + std::to_string(c));
  }
  std::int64_t size() const override { return n_; }
  std::int64_t label(std::int64_t i) const override {
    return i % static_cast<std::int64_t>(names_.size());
  }
  const std::vector<std::string>& classes() const override { return names_; }
  cv::Mat image(std::int64_t i, const DecodeOptions& o) const override {
    if (corrupt_every_ > 0 && i % corrupt_every_ == 0) throw FormatError(source(i) + ": corrupt");
    return cv::Mat(6, 6, o.channels == 1 ? CV_8UC1 : CV_8UC3, cv::Scalar::all(double(i % 256)));
  }
  std::string source(std::int64_t i) const override { return "solid#" + std::to_string(i); }

 private:
  std::int64_t n_;
  std::int64_t corrupt_every_;
  std::vector<std::string> names_;
};

// SolidDataset stored in shards of `per_shard` samples.
class ShardedSolidDataset final : public Dataset {
 public:
  ShardedSolidDataset(std::int64_t n, std::int64_t per_shard)
      : solid_(n, 3), per_shard_(per_shard) {}
  std::int64_t size() const override { return solid_.size(); }
  std::int64_t label(std::int64_t i) const override { return solid_.label(i); }
  const std::vector<std::string>& classes() const override { return solid_.classes(); }
  cv::Mat image(std::int64_t i, const DecodeOptions& o) const override {
    return solid_.image(i, o);
  }
  std::string source(std::int64_t i) const override { return solid_.source(i); }
  std::vector<std::int64_t> shard_starts() const override {
    std::vector<std::int64_t> starts;
    for (std::int64_t s = 0; s < size(); s += per_shard_) starts.push_back(s);
    return starts;
  }

 private:
  SolidDataset solid_;
  std::int64_t per_shard_;
};

PipelinePtr identity_pipeline() {
  return std::make_shared<Pipeline>(std::vector<OpPtr>{}, 6, 6, std::vector<float>{0, 0, 0},
                                    std::vector<float>{1, 1, 1});
}

std::vector<std::int64_t> run_epoch(Loader& loader, std::int64_t epoch) {
  std::vector<std::int64_t> seen;
  loader.start_epoch(epoch);
  while (auto batch = loader.next()) {
    auto idx = batch->indices;
    for (std::int64_t k = 0; k < idx.size(0); ++k) {
      const std::int64_t i = idx[k].item<std::int64_t>();
      // The image in slot k is sample i: its pixel value is i % 256 / 255.
      EXPECT_NEAR(batch->images[k][0][0][0].item<float>(), float(i % 256) / 255.f, 1e-6);
      EXPECT_EQ(batch->labels[k].item<std::int64_t>(), i % 3);
      seen.push_back(i);
    }
  }
  return seen;
}

TEST(Loader, EveryIndexOncePerEpoch) {
  auto data = std::make_shared<SolidDataset>(103, 3);
  LoaderOptions o;
  o.batch_size = 10;
  o.num_workers = 3;
  Loader loader(data, identity_pipeline(), o);
  EXPECT_EQ(loader.num_batches(), 11);
  for (std::int64_t epoch = 0; epoch < 3; ++epoch) {
    auto seen = run_epoch(loader, epoch);
    ASSERT_EQ(seen.size(), 103u);
    std::set<std::int64_t> unique(seen.begin(), seen.end());
    EXPECT_EQ(unique.size(), 103u);
    EXPECT_EQ(*unique.begin(), 0);
    EXPECT_EQ(*unique.rbegin(), 102);
  }
}

TEST(Loader, DeterministicForSeedWhateverTheWorkers) {
  auto data = std::make_shared<SolidDataset>(50, 3);
  LoaderOptions a;
  a.batch_size = 7;
  a.seed = 42;
  a.num_workers = 1;
  LoaderOptions b = a;
  b.num_workers = 4;
  Loader la(data, identity_pipeline(), a);
  Loader lb(data, identity_pipeline(), b);
  EXPECT_EQ(run_epoch(la, 5), run_epoch(lb, 5));
  EXPECT_NE(run_epoch(la, 5), run_epoch(la, 6));  // a new permutation each epoch
  LoaderOptions c = a;
  c.seed = 43;
  Loader lc(data, identity_pipeline(), c);
  EXPECT_NE(run_epoch(la, 5), run_epoch(lc, 5));
}

TEST(Loader, NoShuffleKeepsOrderAndDropLast) {
  auto data = std::make_shared<SolidDataset>(25, 3);
  LoaderOptions o;
  o.batch_size = 10;
  o.shuffle = false;
  o.drop_last = true;
  Loader loader(data, identity_pipeline(), o);
  auto seen = run_epoch(loader, 0);
  ASSERT_EQ(seen.size(), 20u);
  for (std::int64_t i = 0; i < 20; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], i);
}

TEST(Loader, ShardsAreDisjointAndCoverTheEpoch) {
  auto data = std::make_shared<SolidDataset>(40, 3);
  std::vector<std::int64_t> all;
  for (int rank = 0; rank < 2; ++rank) {
    LoaderOptions o;
    o.batch_size = 8;
    o.seed = 7;
    o.rank = rank;
    o.world_size = 2;
    Loader loader(data, identity_pipeline(), o);
    auto seen = run_epoch(loader, 3);
    EXPECT_EQ(seen.size(), 20u);
    all.insert(all.end(), seen.begin(), seen.end());
  }
  std::sort(all.begin(), all.end());
  for (std::int64_t i = 0; i < 40; ++i) EXPECT_EQ(all[static_cast<std::size_t>(i)], i);
}

TEST(Loader, ShardedDataGivesEachRankWholeShardsAndEverySampleOnce) {
  auto data = std::make_shared<ShardedSolidDataset>(60, 10);
  for (std::int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<std::int64_t> all;
    for (int rank = 0; rank < 3; ++rank) {
      LoaderOptions o;
      o.batch_size = 7;
      o.seed = 11;
      o.rank = rank;
      o.world_size = 3;
      o.shuffle_buffer = 4;
      Loader loader(data, identity_pipeline(), o);
      const auto seen = run_epoch(loader, epoch);
      EXPECT_EQ(seen, loader.epoch_indices(epoch));
      std::set<std::int64_t> shards;
      for (const std::int64_t i : seen) shards.insert(i / 10);
      EXPECT_EQ(shards.size(), 2u) << "rank " << rank << " reads two whole shards of 10";
      all.insert(all.end(), seen.begin(), seen.end());
    }
    std::sort(all.begin(), all.end());
    for (std::int64_t i = 0; i < 60; ++i) EXPECT_EQ(all[static_cast<std::size_t>(i)], i);
  }
}

TEST(Loader, WorkerErrorReachesTheCaller) {
  auto data = std::make_shared<SolidDataset>(20, 3, 7);
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  Loader loader(data, identity_pipeline(), o);
  loader.start_epoch(0);
  EXPECT_THROW(
      {
        while (loader.next()) {
        }
      },
      FormatError);
}

TEST(Loader, SkipCorruptCountsAndDrops) {
  auto data = std::make_shared<SolidDataset>(20, 3, 7);  // 0, 7, 14 are corrupt
  LoaderOptions o;
  o.batch_size = 4;
  o.skip_corrupt = true;
  Loader loader(data, identity_pipeline(), o);
  auto seen = run_epoch(loader, 0);
  EXPECT_EQ(seen.size(), 17u);
  EXPECT_EQ(loader.skipped(), 3);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 7), 0);
}

TEST(Loader, Uint8OutputKeepsRawPixels) {
  auto data = std::make_shared<SolidDataset>(5, 3);
  LoaderOptions o;
  o.batch_size = 5;
  o.shuffle = false;
  o.uint8_output = true;
  Loader loader(data, identity_pipeline(), o);
  loader.start_epoch(0);
  auto batch = loader.next();
  ASSERT_TRUE(batch.has_value());
  EXPECT_EQ(batch->images.scalar_type(), at::kByte);
  EXPECT_EQ(batch->images[4][2][5][5].item<int>(), 4);
}

TEST(Loader, RejectsBadOptions) {
  auto data = std::make_shared<SolidDataset>(5, 3);
  LoaderOptions o;
  o.batch_size = 0;
  EXPECT_THROW(Loader(data, identity_pipeline(), o), InvalidArgument);
  o.batch_size = 2;
  o.rank = 2;
  o.world_size = 2;
  EXPECT_THROW(Loader(data, identity_pipeline(), o), InvalidArgument);
}

}  // namespace
}  // namespace tlcore
