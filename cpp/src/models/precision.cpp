#include "tlcore/models/precision.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdlib>
#include <string>

#include "tlcore/error.h"

namespace tlcore::models {
namespace {

// cpuid leaf 7: sub-leaf 0 EDX bit 22 AMX-BF16, ECX bit 11 AVX512-VNNI;
// sub-leaf 1 EAX bit 5 AVX512-BF16, bit 4 AVX-VNNI (Intel SDM vol. 2A, CPUID).
CpuFeatures read_cpuid() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.amx_bf16 = (d >> 22) & 1U;
  f.avx512_vnni = (c >> 11) & 1U;
  __cpuid_count(7, 1, a, b, c, d);
  f.avx512_bf16 = (a >> 5) & 1U;
  f.avx_vnni = (a >> 4) & 1U;
#endif
  return f;
}

}  // namespace

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::kFloat32;
  if (name == "bf16") return Precision::kBFloat16;
  if (name == "int8") return Precision::kInt8;
  throw InvalidArgument("precision must be 'fp32', 'bf16', 'int8' or 'auto', got '" + name + "'");
}

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kFloat32:
      return "fp32";
    case Precision::kBFloat16:
      return "bf16";
    case Precision::kInt8:
      return "int8";
  }
  return "fp32";
}

CpuFeatures cpu_features() {
  const char* forced = std::getenv("TLCORE_CPU_FEATURES");
  if (forced != nullptr && std::string(forced) == "none") return {};
  return read_cpuid();
}

std::string cpu_features_text(const CpuFeatures& f) {
  std::string text;
  const auto add = [&](bool on, const char* name) {
    if (on) text += (text.empty() ? "" : " ") + std::string(name);
  };
  add(f.avx512_bf16, "avx512_bf16");
  add(f.amx_bf16, "amx_bf16");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx_vnni, "avx_vnni");
  return text.empty() ? "none" : text;
}

Precision resolve_precision(const std::string& requested, const Int8Calibration& int8,
                            std::string* note, const CpuFeatures& features) {
  const bool calibrated = !int8.empty();
  if (note != nullptr) note->clear();
  const auto fall_back = [&](const std::string& why) {
    if (note != nullptr) *note = why + "; running in fp32";
    return Precision::kFloat32;
  };
  if (requested == "auto") {
    if (calibrated && int8.agreement >= kMinAgreement && features.vnni()) return Precision::kInt8;
    if (features.bf16()) return Precision::kBFloat16;
    return Precision::kFloat32;
  }
  const Precision precision = parse_precision(requested);
  if (precision == Precision::kBFloat16 && !features.bf16())
    return fall_back("bf16 asked for, but this CPU has no bf16 instructions (avx512_bf16, amx_bf16)");
  if (precision == Precision::kInt8 && !features.vnni())
    return fall_back("int8 asked for, but this CPU has no VNNI instructions (avx512_vnni, avx_vnni)");
  if (precision == Precision::kInt8 && !calibrated)
    return fall_back("int8 asked for, but the model is not calibrated (tlcore quantize MODEL --data DIR)");
  return precision;
}

}  // namespace tlcore::models
