// The table of training options against the FitOptions struct itself: each name
// reaches the member it documents, a round trip keeps every field, and bad names
// or types are refused with a message that says what is accepted.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "tlcore/error.h"
#include "tlcore/train/fit_option_fields.h"

namespace tlcore {
namespace {

using nlohmann::json;

TEST(FitOptionFields, NamesReachTheirMembers) {
  FitOptions o;
  set_fit_options(o, {{"lr", 0.25},
                      {"optimizer", "sgd"},
                      {"nesterov", true},
                      {"schedule", "cosine"},
                      {"warmup_epochs", 1.5},
                      {"label_smoothing", 0.1},
                      {"class_weights", {1.0, 2.0}},
                      {"patience", 3},
                      {"cache_flip", true},
                      {"seed", 7}});
  EXPECT_DOUBLE_EQ(o.optimizer.lr, 0.25);
  EXPECT_EQ(o.optimizer.name, "sgd");
  EXPECT_TRUE(o.optimizer.nesterov);
  EXPECT_EQ(o.schedule.name, "cosine");
  EXPECT_DOUBLE_EQ(o.schedule.warmup_epochs, 1.5);
  EXPECT_DOUBLE_EQ(o.label_smoothing, 0.1);
  EXPECT_EQ(o.class_weights, (std::vector<double>{1.0, 2.0}));
  EXPECT_EQ(o.patience, 3);
  EXPECT_TRUE(o.cache_flip);
  EXPECT_EQ(o.seed, 7u);
  // Untouched fields keep the struct's defaults.
  EXPECT_EQ(o.monitor, FitOptions{}.monitor);
  EXPECT_EQ(o.epochs, FitOptions{}.epochs);
}

TEST(FitOptionFields, RoundTripKeepsEveryField) {
  FitOptions a;
  a.epochs = 9;
  a.optimizer.beta2 = 0.95;
  a.schedule.final_div_factor = 100;
  a.checkpoint = "x.ckpt";
  a.compile_frozen = false;
  const json j = fit_options_to_json(a);
  std::set<std::string> names;
  for (const auto& f : fit_option_fields()) names.insert(f.name);
  EXPECT_EQ(names.size(), fit_option_fields().size());  // no name twice
  EXPECT_EQ(j.size(), names.size());
  FitOptions b;
  set_fit_options(b, j);
  EXPECT_EQ(fit_options_to_json(b), j);
  EXPECT_EQ(b.epochs, 9);
  EXPECT_DOUBLE_EQ(b.optimizer.beta2, 0.95);
  EXPECT_FALSE(b.compile_frozen);
}

TEST(FitOptionFields, RefusesUnknownNamesAndWrongTypes) {
  FitOptions o;
  try {
    set_fit_options(o, {{"learning_rate", 0.1}});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown training option 'learning_rate'"),
              std::string::npos);
    EXPECT_NE(std::string(e.what()).find("label_smoothing"), std::string::npos);
  }
  EXPECT_THROW(set_fit_options(o, {{"epochs", 1.5}}), InvalidArgument);
  EXPECT_THROW(set_fit_options(o, {{"nesterov", 1}}), InvalidArgument);
  EXPECT_THROW(set_fit_options(o, {{"optimizer", 3}}), InvalidArgument);
  EXPECT_THROW(set_fit_options(o, {{"class_weights", {"a"}}}), InvalidArgument);
  EXPECT_THROW(set_fit_options(o, json::array()), InvalidArgument);
  EXPECT_EQ(o.epochs, FitOptions{}.epochs);
}

}  // namespace
}  // namespace tlcore
