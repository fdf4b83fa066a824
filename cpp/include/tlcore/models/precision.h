// The number format a compiled model computes in, and what this CPU can run fast:
// the one reading of the "fp32" | "bf16" | "int8" | "auto" strings that evaluate,
// predict, the Predictor and `tlcore serve --precision` take.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tlcore::models {

enum class Precision { kFloat32, kBFloat16, kInt8 };

// "fp32", "bf16" or "int8"; InvalidArgument naming the choices otherwise ("auto" is
// resolve_precision's to read).
Precision parse_precision(const std::string& name);
const char* precision_name(Precision precision);

// The instructions that make reduced precision fast, read from cpuid, less the AMX
// ones when ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) keeps oneDNN off them. Setting the
// environment variable TLCORE_CPU_FEATURES=none reports none of them, as an older CPU would.
struct CpuFeatures {
  bool avx512_bf16 = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;
  bool avx512_vnni = false;
  bool avx_vnni = false;
  bool bf16() const { return avx512_bf16 || amx_bf16; }
  bool vnni() const { return avx512_vnni || avx_vnni; }
  // int8 runs safely and fast: VNNI, and no AMX for oneDNN to pick. Debian's torch 1.13
  // ships oneDNN 2.6, whose AMX int8 convolutions corrupt the heap at some shapes
  // (mobilenet_v2 crashes at 96, 176 and 192 px on a Xeon with AMX), and oneDNN takes
  // AMX wherever the CPU has it.
  bool int8() const { return vnni() && !amx_int8; }
};

// The environment setting that keeps oneDNN off AMX, so that int8 runs on VNNI; it must
// be set before the process's first oneDNN call (bf16 then runs without AMX, slower).
inline constexpr const char* kInt8WithoutAmx = "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI";

// Why int8 cannot run on a CPU with these features (ending with what to do), or empty.
std::string int8_unavailable(const CpuFeatures& features);

// Keeps oneDNN off AMX in this process (kInt8WithoutAmx) where the CPU has AMX, unless the
// environment already sets ONEDNN_MAX_CPU_ISA; call it before any model runs (`tlcore
// quantize`, `--precision int8`). Returns whether int8 can run here now: false when a model
// ran before, since oneDNN keeps the instruction set it started with.
bool run_int8_without_amx();
// The CPU's reduced-precision instructions, AMX only where oneDNN uses it in this process
// (asked of oneDNN where its C API is loaded, which fixes its instruction set; else read
// from ONEDNN_MAX_CPU_ISA). TLCORE_CPU_FEATURES=none: none.
CpuFeatures cpu_features();
// "avx512_bf16 avx512_vnni", or "none".
std::string cpu_features_text(const CpuFeatures& features);

// What int8 inference needs besides the float weights: the scale and zero point of
// each activation the quantized graph requantizes, in graph order, chosen once on
// calibration images. Weights are quantized per channel from their own range.
struct Int8Calibration {
  std::vector<double> scales;
  std::vector<int64_t> zero_points;
  // The image size the calibration ran at: the graph (and so the order) depends on it.
  int64_t image_size = 0;
  // Top-1 agreement of int8 with fp32 on images the calibration did not use (-1: not
  // measured); "auto" takes int8 only at kMinAgreement or above.
  double agreement = -1;
  // Added to int8's outputs (the logits): the mean of fp32's minus int8's outputs on the
  // calibration images, a bias correction where the quantization errors end. Empty: none.
  std::vector<double> output_offset;
  // Whether the first convolution stays in float32: true for every calibration made now;
  // files written before it was added say nothing and mean false (their scales include
  // that layer's input), so they keep running as they were calibrated.
  bool float_first_conv = true;
  bool empty() const { return scales.empty(); }
};

inline constexpr double kMinAgreement = 0.99;

// What a model asked to run in `requested` ("fp32", "bf16", "int8" or "auto") runs in
// on this CPU: a precision without its instructions falls back to fp32 (bf16 and int8
// would be emulated, slower than fp32), int8 needs a calibrated model, and int8 where
// AMX makes it unsafe (CpuFeatures::int8) falls back to bf16 where that runs. "auto" is
// int8 when calibrated (with an agreement of at least kMinAgreement) and supported, else bf16 when
// supported, else fp32. `note` receives one line saying why a fallback happened (empty when none
// did).
Precision resolve_precision(const std::string& requested, const Int8Calibration& int8,
                            std::string* note, const CpuFeatures& features = cpu_features());

}  // namespace tlcore::models
