// The precision rule: what runs for each request on CPUs with and without the
// instructions (the detector's answer is a parameter, so every CPU is simulated).
#include <gtest/gtest.h>

#include "tlcore/error.h"
#include "tlcore/models/precision.h"

namespace tlcore::models {
namespace {

CpuFeatures with(bool bf16, bool vnni) {
  CpuFeatures f;
  f.avx512_bf16 = bf16;
  f.avx512_vnni = vnni;
  return f;
}

Int8Calibration calibrated(double agreement) {
  Int8Calibration c;
  c.scales = {0.1};
  c.zero_points = {0};
  c.image_size = 224;
  c.agreement = agreement;
  return c;
}

TEST(Precision, AskedForAndAvailableRunsAsAsked) {
  std::string note;
  EXPECT_EQ(resolve_precision("bf16", {}, &note, with(true, true)), Precision::kBFloat16);
  EXPECT_EQ(resolve_precision("int8", calibrated(1.0), &note, with(true, true)), Precision::kInt8);
  EXPECT_EQ(resolve_precision("fp32", calibrated(1.0), &note, with(true, true)),
            Precision::kFloat32);
  EXPECT_TRUE(note.empty());
}

TEST(Precision, MissingInstructionsFallBackToFp32WithANote) {
  std::string note;
  EXPECT_EQ(resolve_precision("bf16", {}, &note, with(false, true)), Precision::kFloat32);
  EXPECT_NE(note.find("no bf16 instructions"), std::string::npos) << note;
  EXPECT_EQ(resolve_precision("int8", calibrated(1.0), &note, with(true, false)),
            Precision::kFloat32);
  EXPECT_NE(note.find("no VNNI instructions"), std::string::npos) << note;
  EXPECT_EQ(resolve_precision("int8", {}, &note, with(true, true)), Precision::kFloat32);
  EXPECT_NE(note.find("not calibrated"), std::string::npos) << note;
}

TEST(Precision, Int8WhereAmxWouldRunItFallsBackToBf16WithTheRemedy) {
  auto amx = with(true, true);
  amx.amx_bf16 = amx.amx_int8 = true;
  EXPECT_FALSE(amx.int8());
  std::string note;
  EXPECT_EQ(resolve_precision("int8", calibrated(1.0), &note, amx), Precision::kBFloat16);
  EXPECT_NE(note.find("AMX"), std::string::npos) << note;
  EXPECT_NE(note.find(kInt8WithoutAmx), std::string::npos) << note;
  EXPECT_NE(note.find("running in bf16"), std::string::npos) << note;
  EXPECT_EQ(resolve_precision("auto", calibrated(1.0), &note, amx), Precision::kBFloat16);
  EXPECT_TRUE(note.empty());
  EXPECT_TRUE(int8_unavailable(with(true, true)).empty());
}

TEST(Precision, AutoTakesTheFastestThatPassesTheCheck) {
  std::string note;
  EXPECT_EQ(resolve_precision("auto", calibrated(0.995), &note, with(true, true)),
            Precision::kInt8);
  EXPECT_EQ(resolve_precision("auto", calibrated(0.95), &note, with(true, true)),
            Precision::kBFloat16);
  EXPECT_EQ(resolve_precision("auto", {}, &note, with(true, true)), Precision::kBFloat16);
  EXPECT_EQ(resolve_precision("auto", calibrated(1.0), &note, with(false, false)),
            Precision::kFloat32);
  EXPECT_TRUE(note.empty());
}

TEST(Precision, AnUnknownNameIsRefused) {
  std::string note;
  EXPECT_THROW(resolve_precision("fp16", {}, &note, with(true, true)), InvalidArgument);
  EXPECT_THROW(parse_precision("auto"), InvalidArgument);
  EXPECT_STREQ(precision_name(parse_precision("int8")), "int8");
}

}  // namespace
}  // namespace tlcore::models
