// Classification metrics against values computed by hand from scikit-learn's
// definitions (confusion_matrix, precision_recall_fscore_support with
// zero_division=0, top_k_accuracy_score).
#include <gtest/gtest.h>

#include <vector>

#include "data_fixtures.h"
#include "tlcore/error.h"
#include "tlcore/metrics/classification.h"

namespace tlcore {
namespace {

using data_testing::error_of;

// Seven samples of three classes:
//   true 0: predicted 0, 1        true 1: predicted 1, 1        true 2: predicted 2, 0, 2
// confusion (rows true, columns predicted): [1 1 0] [0 2 0] [1 0 2]
// precision = tp / column sum: 1/2, 2/3, 2/2;  recall = tp / row sum: 1/2, 2/2, 2/3
// f1 = 2pr / (p + r): 1/2, 4/5, 4/5;  support 2, 2, 3;  accuracy 5/7
const std::vector<std::int64_t> kTrue{0, 0, 1, 1, 2, 2, 2};
const std::vector<std::int64_t> kPred{0, 1, 1, 1, 2, 0, 2};

TEST(ClassificationReport, ConfusionMatrixByHand) {
  const auto r = classification_report(kTrue, kPred, 3);
  EXPECT_EQ(r.num_classes, 3);
  EXPECT_EQ(r.num_samples, 7);
  EXPECT_EQ(r.confusion, (std::vector<std::int64_t>{1, 1, 0, 0, 2, 0, 1, 0, 2}));
  EXPECT_DOUBLE_EQ(r.accuracy, 5.0 / 7);
}

TEST(ClassificationReport, PerClassPrecisionRecallF1ByHand) {
  const auto r = classification_report(kTrue, kPred, 3);
  ASSERT_EQ(r.per_class.size(), 3u);
  const double precision[] = {1.0 / 2, 2.0 / 3, 1.0};
  const double recall[] = {1.0 / 2, 1.0, 2.0 / 3};
  const double f1[] = {1.0 / 2, 4.0 / 5, 4.0 / 5};
  const std::int64_t support[] = {2, 2, 3};
  for (int c = 0; c < 3; ++c) {
    EXPECT_DOUBLE_EQ(r.per_class[c].precision, precision[c]) << c;
    EXPECT_DOUBLE_EQ(r.per_class[c].recall, recall[c]) << c;
    EXPECT_DOUBLE_EQ(r.per_class[c].f1, f1[c]) << c;
    EXPECT_EQ(r.per_class[c].support, support[c]) << c;
  }
}

TEST(ClassificationReport, MacroAndWeightedAveragesByHand) {
  const auto r = classification_report(kTrue, kPred, 3);
  // Macro: plain means over the three classes.
  EXPECT_NEAR(r.macro.precision, (1.0 / 2 + 2.0 / 3 + 1.0) / 3, 1e-12);
  EXPECT_NEAR(r.macro.recall, (1.0 / 2 + 1.0 + 2.0 / 3) / 3, 1e-12);
  EXPECT_NEAR(r.macro.f1, (1.0 / 2 + 4.0 / 5 + 4.0 / 5) / 3, 1e-12);
  EXPECT_EQ(r.macro.support, 7);
  // Weighted by support 2, 2, 3 of 7; weighted recall is the accuracy.
  EXPECT_NEAR(r.weighted.precision, (2 * 0.5 + 2 * 2.0 / 3 + 3 * 1.0) / 7, 1e-12);
  EXPECT_NEAR(r.weighted.recall, 5.0 / 7, 1e-12);
  EXPECT_NEAR(r.weighted.f1, (2 * 0.5 + 2 * 0.8 + 3 * 0.8) / 7, 1e-12);
  EXPECT_EQ(r.weighted.support, 7);
}

TEST(ClassificationReport, ZeroDivisionGivesZero) {
  // Class 1 is never predicted (precision 0/0), class 2 never occurs (recall 0/0).
  const auto r = classification_report({0, 1}, {0, 0}, 3);
  EXPECT_DOUBLE_EQ(r.per_class[0].precision, 0.5);
  EXPECT_DOUBLE_EQ(r.per_class[0].recall, 1.0);
  EXPECT_DOUBLE_EQ(r.per_class[0].f1, 2.0 / 3);
  for (int c : {1, 2}) {
    EXPECT_EQ(r.per_class[c].precision, 0.0) << c;
    EXPECT_EQ(r.per_class[c].recall, 0.0) << c;
    EXPECT_EQ(r.per_class[c].f1, 0.0) << c;
  }
  EXPECT_EQ(r.per_class[2].support, 0);
  EXPECT_NEAR(r.macro.f1, (2.0 / 3) / 3, 1e-12);
}

TEST(ClassificationReport, BadInputThrows) {
  EXPECT_EQ(error_of<InvalidArgument>([] {
              classification_report({0, 1}, {0}, 2);
            }),
            "classification_report: 2 true labels but 1 predictions");
  EXPECT_EQ(error_of<InvalidArgument>([] {
              classification_report({0, 3}, {0, 1}, 3);
            }),
            "classification_report: true label 3 outside [0, 3)");
  EXPECT_EQ(error_of<InvalidArgument>([] { classification_report({0}, {-1}, 3); }),
            "classification_report: predicted label -1 outside [0, 3)");
}

TEST(TopKAccuracy, CountsTheTrueClassAmongTheKBest) {
  // Row 0: true 2 is second best.  Row 1: true 1 ties class 0 and loses the tie
  // (lower index first), behind class 2: third.  Row 2: true 0 is best.
  const std::vector<float> scores{0.1f, 0.5f, 0.4f, 0.3f, 0.3f, 0.4f, 0.9f, 0.05f, 0.05f};
  const std::vector<std::int64_t> y{2, 1, 0};
  EXPECT_DOUBLE_EQ(top_k_accuracy(scores.data(), 3, 3, y, 1), 1.0 / 3);
  EXPECT_DOUBLE_EQ(top_k_accuracy(scores.data(), 3, 3, y, 2), 2.0 / 3);
  EXPECT_DOUBLE_EQ(top_k_accuracy(scores.data(), 3, 3, y, 3), 1.0);
  EXPECT_THROW(top_k_accuracy(scores.data(), 3, 3, y, 0), InvalidArgument);
}

}  // namespace
}  // namespace tlcore
