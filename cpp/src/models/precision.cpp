#include "tlcore/models/precision.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <string>

#include "tlcore/error.h"

namespace tlcore::models {
namespace {

// cpuid leaf 7: sub-leaf 0 EDX bit 22 AMX-BF16, bit 25 AMX-INT8, ECX bit 11 AVX512-VNNI;
// sub-leaf 1 EAX bit 5 AVX512-BF16, bit 4 AVX-VNNI (Intel SDM vol. 2A, CPUID).
CpuFeatures read_cpuid() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.amx_bf16 = (d >> 22) & 1U;
  f.amx_int8 = (d >> 25) & 1U;
  f.avx512_vnni = (c >> 11) & 1U;
  __cpuid_count(7, 1, a, b, c, d);
  f.avx512_bf16 = (a >> 5) & 1U;
  f.avx_vnni = (a >> 4) & 1U;
#endif
  return f;
}

const char* const kIsaSettings[] = {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"};

// oneDNN's C API where this process has it as a shared library (Debian's torch links
// libdnnl.so.2; a wheel's static copy hides it): `name`, or null. RTLD_NOLOAD: only a
// library already loaded, never a second oneDNN.
void* onednn_function(const char* name) {
  static void* const library = dlopen("libdnnl.so.2", RTLD_LAZY | RTLD_NOLOAD);
  return library == nullptr ? nullptr : dlsym(library, name);
}

// oneDNN 2.6's instruction sets are bit sets: avx512_core_amx (0x3e7) is avx512_core_bf16
// (0xe7) plus these two bits; avx512_core_vnni is 0x67.
constexpr int kOnednnAmxBits = 0x300;
constexpr int kOnednnAvx512CoreVnni = 0x67;

// Whether oneDNN in this process runs AMX kernels, from oneDNN itself; none without its C
// API. Asking fixes its instruction set for the process, as its first kernel would.
std::optional<bool> onednn_uses_amx() {
  using EffectiveIsa = int (*)();
  const auto effective =
      reinterpret_cast<EffectiveIsa>(onednn_function("dnnl_get_effective_cpu_isa"));
  if (effective == nullptr) return std::nullopt;
  return (effective() & kOnednnAmxBits) != 0;
}

// Whether the environment caps oneDNN's instruction set below AMX: one of the values
// oneDNN 2.6 reads (a value it does not know is ignored, and leaves AMX on).
bool onednn_kept_off_amx() {
  for (const char* name : kIsaSettings) {
    const char* value = std::getenv(name);
    if (value == nullptr) continue;
    std::string isa(value);
    std::transform(isa.begin(), isa.end(), isa.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
    for (const char* below : {"SSE41", "AVX", "AVX2", "AVX512_MIC", "AVX512_MIC_4OPS",
                              "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16"})
      if (isa == below) return true;
  }
  return false;
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
  auto features = read_cpuid();
  if (!features.amx_bf16 && !features.amx_int8) return features;
  const auto uses_amx = onednn_uses_amx();
  if (uses_amx ? !*uses_amx : onednn_kept_off_amx()) features.amx_bf16 = features.amx_int8 = false;
  return features;
}

std::string int8_unavailable(const CpuFeatures& f) {
  if (!f.vnni()) return "this CPU has no VNNI instructions (avx512_vnni, avx_vnni)";
  if (f.amx_int8)
    return std::string(
               "this CPU has AMX, whose int8 convolutions in torch 1.13's oneDNN 2.6 corrupt "
               "memory at some image sizes; start the process with ") +
           kInt8WithoutAmx + " to run int8 without AMX";
  return "";
}

std::string cpu_features_text(const CpuFeatures& f) {
  std::string text;
  const auto add = [&](bool on, const char* name) {
    if (on) text += (text.empty() ? "" : " ") + std::string(name);
  };
  add(f.avx512_bf16, "avx512_bf16");
  add(f.amx_bf16, "amx_bf16");
  add(f.amx_int8, "amx_int8");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx_vnni, "avx_vnni");
  return text.empty() ? "none" : text;
}

bool run_int8_without_amx() {
  if (!read_cpuid().amx_int8) return cpu_features().int8();
  const bool user_chose =
      std::getenv(kIsaSettings[0]) != nullptr || std::getenv(kIsaSettings[1]) != nullptr;
  if (!user_chose) {
    // oneDNN refuses the cap once its instruction set is fixed (a model already ran): then
    // cpu_features still reports AMX, and int8 falls back instead of running on it.
    using SetMaxIsa = int (*)(int);
    if (const auto set = reinterpret_cast<SetMaxIsa>(onednn_function("dnnl_set_max_cpu_isa")))
      set(kOnednnAvx512CoreVnni);
    const std::string setting = kInt8WithoutAmx;  // for child processes, and without the C API
    const auto equals = setting.find('=');
    setenv(setting.substr(0, equals).c_str(), setting.substr(equals + 1).c_str(), /*replace=*/0);
  }
  return cpu_features().int8();
}

Precision resolve_precision(const std::string& requested, const Int8Calibration& int8,
                            std::string* note, const CpuFeatures& features) {
  const bool calibrated = !int8.empty();
  if (note != nullptr) note->clear();
  const auto fall_back = [&](const std::string& why, Precision to = Precision::kFloat32) {
    if (note != nullptr) *note = why + "; running in " + precision_name(to);
    return to;
  };
  if (requested == "auto") {
    if (calibrated && int8.agreement >= kMinAgreement && features.int8()) return Precision::kInt8;
    if (features.bf16()) return Precision::kBFloat16;
    return Precision::kFloat32;
  }
  const Precision precision = parse_precision(requested);
  if (precision == Precision::kBFloat16 && !features.bf16())
    return fall_back(
        "bf16 asked for, but this CPU has no bf16 instructions (avx512_bf16, amx_bf16)");
  if (precision == Precision::kInt8 && !calibrated)
    return fall_back(
        "int8 asked for, but the model is not calibrated (tlcore quantize MODEL --data DIR)");
  if (precision == Precision::kInt8 && !features.int8())
    return fall_back(
        "int8 asked for, but " + int8_unavailable(features),
        features.vnni() && features.bf16() ? Precision::kBFloat16 : Precision::kFloat32);
  return precision;
}

}  // namespace tlcore::models
