#include "int8_graph.h"

#include <ATen/Context.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/graph_rewrite_helper.h>
#include <torch/csrc/jit/passes/quantization/finalize.h>
#include <torch/csrc/jit/passes/quantization/insert_observers.h>
#include <torch/csrc/jit/passes/quantization/insert_quant_dequant.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>

#include "tlcore/error.h"

namespace tlcore::models::detail {
namespace {

constexpr int64_t kBins = 2048;
constexpr int64_t kQuantLevels =
    255;  // quint8 activations, full range (VNNI needs no reduce_range)

// phase 0 records the range, phase 1 a histogram over it, phase 2 (the saved model)
// nothing: calculate_qparams returns the chosen scale and zero point.
const char* const kActivationObserver = R"JIT(
def forward(self, x: Tensor) -> Tensor:
    if self.phase == 0:
        lo = torch.min(x.detach()).reshape([1])
        hi = torch.max(x.detach()).reshape([1])
        if self.seen:
            self.min_val = torch.minimum(self.min_val, lo)
            self.max_val = torch.maximum(self.max_val, hi)
        else:
            self.min_val = lo
            self.max_val = hi
            self.seen = True
    elif self.phase == 1:
        lo = float(self.min_val.item())
        hi = float(self.max_val.item())
        if hi > lo:
            self.histogram = self.histogram + torch.histc(x.detach().float(), self.bins, lo, hi)
    return x

def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
    return self.scale, self.zero_point
)JIT";

// torch's default_per_channel_weight_observer: qint8, symmetric, scale = max|w| / 127.5.
const char* const kWeightObserver = R"JIT(
def forward(self, x: Tensor) -> Tensor:
    self.max_abs = torch.amax(torch.abs(x.detach()).flatten(1), 1)
    return x

def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
    scale = torch.clamp(self.max_abs / 127.5, min=1.1920928955078125e-07)
    return scale, torch.zeros_like(scale).long()
)JIT";

torch::jit::Module activation_observer() {
  torch::jit::Module m(c10::QualifiedName("__torch__.tlcore.ActivationObserver"));
  m.register_attribute("dtype", c10::IntType::get(), static_cast<int64_t>(c10::ScalarType::QUInt8));
  m.register_attribute("qscheme", c10::IntType::get(),
                       static_cast<int64_t>(c10::QScheme::PER_TENSOR_AFFINE));
  m.register_attribute("phase", c10::IntType::get(), int64_t{0});
  m.register_attribute("seen", c10::BoolType::get(), false);
  m.register_attribute("bins", c10::IntType::get(), kBins);
  m.register_buffer("min_val", torch::zeros({1}));
  m.register_buffer("max_val", torch::zeros({1}));
  m.register_buffer("histogram", torch::zeros({kBins}));
  m.register_buffer("scale", torch::ones({1}));
  m.register_buffer("zero_point", torch::zeros({1}, torch::kLong));
  m.define(kActivationObserver);
  return m;
}

torch::jit::Module weight_observer() {
  torch::jit::Module m(c10::QualifiedName("__torch__.tlcore.WeightObserver"));
  m.register_attribute("dtype", c10::IntType::get(), static_cast<int64_t>(c10::ScalarType::QInt8));
  m.register_attribute("qscheme", c10::IntType::get(),
                       static_cast<int64_t>(c10::QScheme::PER_CHANNEL_SYMMETRIC));
  m.register_attribute("ch_axis", c10::IntType::get(), int64_t{0});
  m.register_buffer("max_abs", torch::ones({1}));
  m.define(kWeightObserver);
  return m;
}

// An activation observer, and the range its value is clamped to by what reads it: a
// value read only by ReLUs (or ReLU6s: hardtanh from 0 to 6) needs no levels below 0
// (or above 6), since they would be clipped right after (MobileNetV2's top-1 agreement
// with fp32 on flower photos rose from 96.8% to 98.2% with this).
struct Observed {
  torch::jit::Module observer;
  torch::jit::Node* call = nullptr;  // the observer's call in the graph
  double lower = -std::numeric_limits<double>::infinity();
  double upper = std::numeric_limits<double>::infinity();
};

// The clamp that `reader` applies to its first input, if it is a ReLU or a hardtanh.
std::optional<std::pair<double, double>> clamp_of(const torch::jit::Node* reader) {
  const auto kind = reader->kind();
  if (kind == c10::aten::relu || kind == c10::aten::relu_)
    return std::make_pair(0.0, std::numeric_limits<double>::infinity());
  if (kind != c10::aten::hardtanh && kind != c10::aten::hardtanh_) return std::nullopt;
  const auto low = torch::jit::toIValue(reader->input(1));
  const auto high = torch::jit::toIValue(reader->input(2));
  if (!low || !high || !low->isScalar() || !high->isScalar()) return std::nullopt;
  return std::make_pair(low->toScalar().toDouble(), high->toScalar().toDouble());
}

// The widest clamp over every reader of `value`; none when one reader does not clamp.
void bound_by_readers(const torch::jit::Value* value, Observed& observed) {
  double lower = std::numeric_limits<double>::infinity();
  double upper = -std::numeric_limits<double>::infinity();
  for (const auto& use : value->uses()) {
    const auto clamp = use.offset == 0 ? clamp_of(use.user) : std::nullopt;
    if (!clamp) return;
    lower = std::min(lower, clamp->first);
    upper = std::max(upper, clamp->second);
  }
  if (value->uses().empty()) return;
  observed.lower = lower;
  observed.upper = upper;
}

// The activation observers in the order the graph calls them. Not by their names: the
// pass numbers them in hash-set order, which differs between two runs on the same graph.
std::vector<Observed> activation_observers(const torch::jit::Module& observed) {
  std::vector<Observed> observers;
  std::unordered_set<std::string> seen;
  for (const auto* node : observed.get_method("forward").graph()->nodes()) {
    if (node->kind() != c10::prim::CallMethod || node->s(c10::attr::name) != "forward") continue;
    const auto* instance = node->input(0)->node();
    if (instance->kind() != c10::prim::GetAttr) continue;
    const auto name = instance->s(c10::attr::name);
    if (name.find("_observer_") == std::string::npos || !seen.insert(name).second) continue;
    auto observer = observed.attr(name).toModule();
    if (observer.hasattr("ch_axis")) continue;
    observers.push_back({observer, const_cast<torch::jit::Node*>(node)});
    bound_by_readers(node->output(), observers.back());
  }
  return observers;
}

// A ReLU or ReLU6 reading a value whose scale covers [0, h] with h within its clamp
// is the identity on the quantized values (zero point 0, nothing above h): it goes,
// and MobileNetV2's ReLU6s stop costing a pass and a copy each (12% of its int8 time).
void drop_identity_clamps(std::vector<Observed>& observers, const Int8Calibration& calibration) {
  for (size_t i = 0; i < observers.size(); ++i) {
    if (observers[i].lower != 0.0 || calibration.zero_points[i] != 0) continue;
    // Within float32 rounding of the scale: a top of 6.0000002 clamped at 6 changes nothing.
    const double top = calibration.scales[i] * kQuantLevels * (1 - 1e-6);
    const auto uses = observers[i].call->output()->uses();  // a copy: the loop edits the graph
    for (const auto& use : uses) {
      const auto clamp = use.offset == 0 ? clamp_of(use.user) : std::nullopt;
      if (!clamp || clamp->first > 0.0 || clamp->second < top) continue;
      use.user->output()->replaceAllUsesWith(use.user->input(0));
      use.user->destroy();
    }
  }
}

// The graph returns its output plus `offset` (one value per output column).
void add_to_output(torch::jit::Module& module, const std::vector<double>& offset) {
  auto graph = module.get_method("forward").graph();
  torch::jit::WithInsertPoint here(graph->return_node());
  auto* constant = graph->insertConstant(torch::tensor(offset, torch::kFloat));
  auto* sum = graph->insert(c10::aten::add, {graph->outputs()[0], constant});
  graph->return_node()->replaceInput(0, sum);
}

void set_phase(std::vector<Observed>& observers, int64_t phase) {
  for (auto& o : observers) o.observer.setattr("phase", phase);
}

// Narrows each observed range to its readers' clamp before the histogram is taken.
void clamp_ranges(std::vector<Observed>& observers) {
  for (auto& o : observers) {
    const double low = o.observer.attr("min_val").toTensor().item<double>();
    const double high = o.observer.attr("max_val").toTensor().item<double>();
    const double clamped_low = std::max(low, o.lower), clamped_high = std::min(high, o.upper);
    if (clamped_low >= clamped_high) continue;
    o.observer.setattr("min_val", torch::full({1}, clamped_low));
    o.observer.setattr("max_val", torch::full({1}, clamped_high));
  }
}

// The squared error of quantizing the histogram's mass into kQuantLevels steps over
// bins [first, last]: rounding error (step^2 / 12) inside, the distance to the nearest
// end outside (clipping).
double quantization_error(const std::vector<double>& counts, double bin_width, int64_t first,
                          int64_t last) {
  const double lo = first * bin_width, hi = (last + 1) * bin_width;
  const double step = (hi - lo) / kQuantLevels;
  double error = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] == 0) continue;
    const double centre = (static_cast<double>(i) + 0.5) * bin_width;
    const double clipped = centre < lo ? lo - centre : (centre > hi ? centre - hi : 0.0);
    error += counts[i] * (clipped * clipped + step * step / 12);
  }
  return error;
}

// Shrinks [min, max] from whichever end holds less mass while the error falls (the
// search of torch's HistogramObserver, with the error above); then widens it to hold 0.
std::pair<double, int64_t> choose_qparams(const std::vector<double>& counts, double min_val,
                                          double max_val) {
  const int64_t bins = static_cast<int64_t>(counts.size());
  double total = 0;
  std::vector<double> cumulative(counts.size());
  for (int64_t i = 0; i < bins; ++i) cumulative[i] = total += counts[i];
  double lo = min_val, hi = max_val;
  if (total > 0 && max_val > min_val) {
    const double width = (max_val - min_val) / bins;
    int64_t first = 0, last = bins - 1;
    double best = quantization_error(counts, width, first, last);
    for (double alpha = 0, beta = 1; alpha < beta;) {
      int64_t l = first, r = last;
      while (l < last && cumulative[l] < (alpha + 1e-5) * total) ++l;
      while (r > first && cumulative[r] > (beta - 1e-5) * total) --r;
      int64_t next_first = first, next_last = last;
      if (l - first > last - r) {
        next_first = l;
        alpha += 1e-5;
      } else {
        next_last = r;
        beta -= 1e-5;
      }
      if (next_first == first && next_last == last) continue;
      if (next_first > next_last) break;
      const double error = quantization_error(counts, width, next_first, next_last);
      if (error > best) break;
      best = error;
      first = next_first;
      last = next_last;
    }
    lo = min_val + first * width;
    hi = min_val + (last + 1) * width;
  }
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  const double scale =
      std::max((hi - lo) / kQuantLevels, double(std::numeric_limits<float>::epsilon()));
  const auto zero_point =
      std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(-lo / scale)), 0, kQuantLevels);
  return {scale, zero_point};
}

// The size arguments (kernel, stride, padding, dilation) of 2-d convolution and pooling.
std::pair<size_t, size_t> size_arguments(c10::Symbol kind) {
  if (kind == c10::aten::conv2d) return {3, 5};
  if (kind == c10::aten::max_pool2d) return {1, 4};
  if (kind == c10::aten::avg_pool2d) return {1, 3};
  return {1, 0};
}

// tlcore's layers give a square kernel's sizes as one number, which the graph records
// as a one-element list; the quantized convolution and pooling kernels take two.
void spell_out_size_lists(torch::jit::Graph& graph) {
  for (auto* node : graph.nodes()) {
    const auto [first, last] = size_arguments(node->kind());
    for (size_t i = first; i <= last; ++i) {
      auto* list = node->input(i);
      torch::jit::WithInsertPoint here(node);
      if (list->node()->kind() == c10::prim::ListConstruct && list->node()->inputs().size() == 1) {
        auto* one = list->node()->input(0);
        node->replaceInput(
            i, graph.insertNode(graph.createList(c10::IntType::get(), {one, one}))->output());
        continue;
      }
      const auto value = torch::jit::toIValue(list);
      if (!value || !value->isIntList() || value->toIntList().size() != 1) continue;
      const int64_t v = value->toIntList().get(0);
      node->replaceInput(i, graph.insertConstant(std::vector<int64_t>{v, v}));
    }
  }
}

// The first convolution reads the image itself, where int8 loses the most (torchvision's
// quantization recipes leave it in float where accuracy needs it: MobileNetV2's top-1
// agreement with fp32 on flower photos rose from 98.8% to 99.4%). The passes quantize
// aten::conv2d, so it is respelled as aten::convolution, the same computation, which they
// leave alone. (The classifier stays in float32 already: tracing records it as aten::addmm.)
void keep_first_conv_in_float(torch::jit::Graph& graph) {
  for (auto* node : graph.nodes()) {
    if (node->kind() != c10::aten::conv2d) continue;
    torch::jit::WithInsertPoint here(node);
    auto* no = graph.insertConstant(false);
    auto* no_output_padding = graph.insertConstant(std::vector<int64_t>{0, 0});
    const auto in = [&](size_t i) { return node->input(i); };
    auto* conv = graph.insert(c10::aten::convolution, {in(0), in(1), in(2), in(3), in(4), in(5), no,
                                                       no_output_padding, in(6)});
    node->output()->replaceAllUsesWith(conv);
    node->destroy();
    return;
  }
}

}  // namespace

torch::jit::Module observe_for_int8(const torch::jit::Module& traced, bool float_first_conv) {
  auto frozen = torch::jit::freeze(traced);
  auto graph = frozen.get_method("forward").graph();
  // Freezing leaves aten::_convolution, which the fusion patterns (conv + relu) do not match.
  torch::jit::graph_rewrite_helper::replaceConvolutionWithAtenConv(graph);
  spell_out_size_lists(*graph);
  if (float_first_conv) keep_first_conv_in_float(*graph);
  torch::jit::QConfigDict qconfig{
      {"", torch::jit::QConfig{activation_observer(), weight_observer()}}};
  return torch::jit::InsertObservers(frozen, "forward", qconfig, /*inplace=*/true);
}

Int8Calibration calibrate_observed(torch::jit::Module& observed,
                                   const std::vector<torch::Tensor>& batches, int64_t image_size) {
  if (batches.empty()) throw InvalidArgument("int8 calibration: no images given");
  auto observers = activation_observers(observed);
  const auto run_all = [&] {
    for (const auto& batch : batches) observed.forward({batch.to(torch::kFloat).contiguous()});
  };
  set_phase(observers, 0);
  run_all();
  clamp_ranges(observers);
  set_phase(observers, 1);
  run_all();
  Int8Calibration calibration;
  calibration.image_size = image_size;
  for (auto& entry : observers) {
    const auto& o = entry.observer;
    const auto histogram = o.attr("histogram").toTensor().to(torch::kDouble).contiguous();
    std::vector<double> counts(histogram.data_ptr<double>(),
                               histogram.data_ptr<double>() + histogram.numel());
    const auto [scale, zero_point] =
        choose_qparams(counts, o.attr("min_val").toTensor().item<double>(),
                       o.attr("max_val").toTensor().item<double>());
    calibration.scales.push_back(scale);
    calibration.zero_points.push_back(zero_point);
  }
  return calibration;
}

torch::jit::Module convert_to_int8(torch::jit::Module observed, const Int8Calibration& calibration,
                                   const torch::Tensor& example) {
  auto observers = activation_observers(observed);
  if (observers.size() != calibration.scales.size() ||
      calibration.zero_points.size() != calibration.scales.size())
    throw FormatError("int8 calibration holds " + std::to_string(calibration.scales.size()) +
                      " activation scales, this model's graph needs " +
                      std::to_string(observers.size()) + ": calibrate it again");
  set_phase(observers, 2);
  for (size_t i = 0; i < observers.size(); ++i) {
    observers[i].observer.setattr("scale", torch::full({1}, calibration.scales[i]));
    observers[i].observer.setattr("zero_point",
                                  torch::full({1}, calibration.zero_points[i], torch::kLong));
  }
  drop_identity_clamps(observers, calibration);
  observed.forward({example});  // the weight observers read the weights
  // Weights are prepacked for the engine current at Finalize: oneDNN's kernels use VNNI.
  const auto& engines = at::globalContext().supportedQEngines();
  if (std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) != engines.end())
    at::globalContext().setQEngine(at::QEngine::ONEDNN);
  auto quantized = torch::jit::InsertQuantDeQuant(observed, "forward", /*inplace=*/true,
                                                  /*debug=*/false, torch::jit::QuantType::STATIC);
  auto finalized = torch::jit::Finalize(quantized, torch::jit::QuantType::STATIC, {});
  if (!calibration.output_offset.empty()) add_to_output(finalized, calibration.output_offset);
  return finalized;
}

}  // namespace tlcore::models::detail
