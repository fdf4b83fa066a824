// Stratified splits, per-class subsets and the Subset view.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tlcore/data/dataset.h"
#include "tlcore/data/split.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

// Class sizes 100, 50, 7, 2, 1, interleaved so classes are not contiguous.
std::vector<std::int64_t> mixed_labels() {
  std::vector<std::int64_t> labels;
  const std::map<std::int64_t, int> sizes = {{0, 100}, {1, 50}, {2, 7}, {3, 2}, {4, 1}};
  for (int round = 0; round < 100; ++round) {
    for (const auto& [label, n] : sizes) {
      if (round < n) labels.push_back(label);
    }
  }
  return labels;
}

std::map<std::int64_t, int> count_classes(const std::vector<std::int64_t>& indices,
                                          const std::vector<std::int64_t>& labels) {
  std::map<std::int64_t, int> counts;
  for (std::int64_t i : indices) ++counts[labels[static_cast<std::size_t>(i)]];
  return counts;
}

TEST(StratifiedSplit, ProportionsPerClass) {
  const std::vector<std::int64_t> labels = mixed_labels();
  const Split split = stratified_split(labels, 0.2, 42);
  // round(n * 0.2), at least one for classes of two or more, none from a singleton.
  EXPECT_EQ(count_classes(split.val, labels),
            (std::map<std::int64_t, int>{{0, 20}, {1, 10}, {2, 1}, {3, 1}}));
  EXPECT_EQ(count_classes(split.train, labels),
            (std::map<std::int64_t, int>{{0, 80}, {1, 40}, {2, 6}, {3, 1}, {4, 1}}));

  EXPECT_TRUE(std::is_sorted(split.train.begin(), split.train.end()));
  EXPECT_TRUE(std::is_sorted(split.val.begin(), split.val.end()));
  std::vector<std::int64_t> all = split.train;
  all.insert(all.end(), split.val.begin(), split.val.end());
  std::sort(all.begin(), all.end());
  std::vector<std::int64_t> expected(labels.size());
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<std::int64_t>(i);
  EXPECT_EQ(all, expected);  // disjoint and covering
}

TEST(StratifiedSplit, SeededAndReproducible) {
  const std::vector<std::int64_t> labels = mixed_labels();
  const Split a = stratified_split(labels, 0.3, 7);
  const Split b = stratified_split(labels, 0.3, 7);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.val, b.val);
  EXPECT_NE(stratified_split(labels, 0.3, 8).val, a.val);
}

TEST(StratifiedSplit, EveryMemberEquallyLikely) {
  // Over many seeds each of ten samples lands in validation about 30% of the time.
  const std::vector<std::int64_t> labels(10, 0);
  std::vector<int> hits(10, 0);
  const int seeds = 4000;
  for (int seed = 0; seed < seeds; ++seed) {
    for (std::int64_t i : stratified_split(labels, 0.3, static_cast<std::uint64_t>(seed)).val) {
      ++hits[static_cast<std::size_t>(i)];
    }
  }
  for (int h : hits) EXPECT_NEAR(h / double(seeds), 0.3, 0.03);
}

TEST(StratifiedSplit, EdgeFractionsAndBadInput) {
  const std::vector<std::int64_t> labels = mixed_labels();
  EXPECT_TRUE(stratified_split(labels, 0.0, 1).val.empty());
  EXPECT_TRUE(stratified_split(labels, 1.0, 1).train.empty());
  // A high fraction still leaves each class of two or more one training sample.
  EXPECT_EQ(count_classes(stratified_split({0, 0, 1, 1, 1}, 0.9, 1).train, {0, 0, 1, 1, 1}),
            (std::map<std::int64_t, int>{{0, 1}, {1, 1}}));
  EXPECT_THROW(stratified_split(labels, -0.1, 1), InvalidArgument);
  EXPECT_THROW(stratified_split(labels, 1.5, 1), InvalidArgument);
  EXPECT_THROW(stratified_split(labels, std::nan(""), 1), InvalidArgument);
  EXPECT_THROW(stratified_split({0, -1}, 0.5, 1), InvalidArgument);
}

TEST(PerClassSubset, AtMostKPerClass) {
  const std::vector<std::int64_t> labels = mixed_labels();
  const std::vector<std::int64_t> subset = per_class_subset(labels, 5, 3);
  EXPECT_EQ(count_classes(subset, labels),
            (std::map<std::int64_t, int>{{0, 5}, {1, 5}, {2, 5}, {3, 2}, {4, 1}}));
  EXPECT_TRUE(std::is_sorted(subset.begin(), subset.end()));
  EXPECT_EQ(std::set<std::int64_t>(subset.begin(), subset.end()).size(), subset.size());
  EXPECT_EQ(per_class_subset(labels, 5, 3), subset);
  EXPECT_NE(per_class_subset(labels, 5, 4), subset);
  EXPECT_TRUE(per_class_subset(labels, 0, 3).empty());
  EXPECT_THROW(per_class_subset(labels, -1, 3), InvalidArgument);
}

// Labels i % 3, sources "s<i>".
class Numbers final : public Dataset {
 public:
  std::int64_t size() const override { return 10; }
  std::int64_t label(std::int64_t i) const override { return i % 3; }
  const std::vector<std::string>& classes() const override { return classes_; }
  cv::Mat image(std::int64_t i, const DecodeOptions& o) const override {
    return cv::Mat(2, 2, CV_8UC(o.channels), cv::Scalar::all(static_cast<double>(i)));
  }
  std::string source(std::int64_t i) const override { return "s" + std::to_string(i); }

 private:
  std::vector<std::string> classes_ = {"a", "b", "c"};
};

TEST(Subset, ViewsTheParentThroughIndices) {
  const auto parent = std::make_shared<Numbers>();
  const Subset subset(parent, {7, 2, 9});
  EXPECT_EQ(subset.size(), 3);
  EXPECT_EQ(subset.labels(), (std::vector<std::int64_t>{1, 2, 0}));
  EXPECT_EQ(subset.source(1), "s2");
  EXPECT_EQ(subset.classes(), parent->classes());
  EXPECT_EQ(subset.image(2, {}).at<cv::Vec3b>(0, 0), cv::Vec3b(9, 9, 9));
  EXPECT_THROW(subset.label(3), InvalidArgument);
  EXPECT_THROW(Subset(parent, {0, 10}), InvalidArgument);
  EXPECT_THROW(Subset(nullptr, {}), InvalidArgument);
}

}  // namespace
}  // namespace tlcore
