#include "fit_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "../core/torch_compat.h"
#include "tlcore/error.h"
#include "tlcore/models/checkpoint.h"

namespace tlcore::detail {
namespace {

namespace fs = std::filesystem;

// Every field of the history as one row of doubles, so the checkpoint stores it as a tensor.
constexpr int kHistoryFields = 10;

// Names the layout, so a checkpoint from another layout is refused, not misread.
constexpr const char* kFormat = "tlcore-fit-checkpoint/2";

std::vector<double> to_row(const EpochStats& s) {
  return {double(s.epoch), s.train_loss,       s.train_accuracy, double(s.has_val),
          s.val_loss,      s.val_accuracy,     s.val_f1,         s.lr,
          s.seconds,       s.images_per_second};
}

EpochStats from_row(const double* r, const std::string& phase) {
  EpochStats s;
  s.epoch = static_cast<std::int64_t>(r[0]);
  s.phase = phase;
  s.train_loss = r[1];
  s.train_accuracy = r[2];
  s.has_val = r[3] != 0;
  s.val_loss = r[4];
  s.val_accuracy = r[5];
  s.val_f1 = r[6];
  s.lr = r[7];
  s.seconds = r[8];
  s.images_per_second = r[9];
  return s;
}

torch::Tensor history_tensor(const std::vector<EpochStats>& history) {
  auto t = torch::zeros({std::int64_t(history.size()), kHistoryFields}, torch::kDouble);
  for (std::size_t i = 0; i < history.size(); ++i) {
    const auto row = to_row(history[i]);
    for (int j = 0; j < kHistoryFields; ++j) t[std::int64_t(i)][j] = row[std::size_t(j)];
  }
  return t;
}

// Strings travel as uint8 tensors and numbers as 0-d tensors, so the whole
// checkpoint is one dict of tensors: the file tlcore's pickle reader reads without
// running code (torch's archive loader would run any TorchScript it holds).
torch::Tensor text_tensor(const std::string& s) {
  auto t = torch::empty({std::int64_t(s.size())}, torch::kUInt8);
  std::copy(s.begin(), s.end(), t.data_ptr<std::uint8_t>());
  return t;
}

void put_state(models::StateDict& out, const std::string& prefix, const models::StateDict& state) {
  for (const auto& [name, tensor] : state) out.emplace_back(prefix + name, tensor);
}

// The state torch::optim keeps per parameter, by the parameter's place in the groups.
using ParamStateFields = std::vector<std::pair<std::string, torch::Tensor>>;

template <class State>
ParamStateFields adam_fields(const State& s) {
  ParamStateFields f = {{"step", torch::tensor(std::int64_t(s.step()))},
                        {"exp_avg", s.exp_avg()},
                        {"exp_avg_sq", s.exp_avg_sq()}};
  if (s.max_exp_avg_sq().defined()) f.emplace_back("max_exp_avg_sq", s.max_exp_avg_sq());
  return f;
}

ParamStateFields state_fields(const torch::optim::OptimizerParamState& state) {
  if (auto* s = dynamic_cast<const torch::optim::AdamParamState*>(&state)) return adam_fields(*s);
  if (auto* s = dynamic_cast<const torch::optim::AdamWParamState*>(&state)) return adam_fields(*s);
  if (auto* s = dynamic_cast<const torch::optim::SGDParamState*>(&state))
    return {{"momentum_buffer", s->momentum_buffer()}};
  throw Unsupported("checkpoint: an optimizer state tlcore cannot save");
}

std::vector<torch::Tensor> optimizer_params(torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> params;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) params.push_back(p);
  return params;
}

void put_optimizer(models::StateDict& out, torch::optim::Optimizer& optimizer) {
  auto& states = optimizer.state();
  const auto params = optimizer_params(optimizer);
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto it = states.find(compat::optimizer_state_key(states, params[i]));
    if (it == states.end()) continue;
    for (auto& [field, tensor] : state_fields(*it->second))
      out.emplace_back("optim." + std::to_string(i) + "." + field, tensor);
  }
}

// A checkpoint's entries by name, each read at most once.
class Entries {
 public:
  Entries(models::StateDict state, std::string path) : path_(std::move(path)) {
    for (auto& [name, tensor] : state) by_name_.emplace(std::move(name), std::move(tensor));
  }
  const std::string& path() const { return path_; }
  const torch::Tensor* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &it->second;
  }
  const torch::Tensor& at(const std::string& name) const {
    if (auto* t = find(name)) return *t;
    throw FormatError(path_ + ": not a tlcore checkpoint (no entry '" + name + "')");
  }
  // A 0-d number or a uint8 string; FormatError for anything else.
  torch::Tensor scalar(const std::string& name) const {
    const auto& t = at(name);
    if (t.dim() != 0) throw FormatError(path_ + ": entry '" + name + "' is not a number");
    return t;
  }
  std::string text(const std::string& name) const {
    const auto& t = at(name);
    if (t.dim() != 1 || t.scalar_type() != torch::kUInt8)
      throw FormatError(path_ + ": entry '" + name + "' is not text");
    const auto* p = t.contiguous().data_ptr<std::uint8_t>();
    return std::string(p, p + t.numel());
  }
  // `like`'s shape and dtype, or FormatError naming the entry.
  torch::Tensor shaped(const std::string& name, const torch::Tensor& like) const {
    const auto& t = at(name);
    if (t.sizes() != like.sizes() || t.scalar_type() != like.scalar_type())
      throw FormatError(path_ + ": entry '" + name + "' does not fit the model");
    return t;
  }

 private:
  std::map<std::string, torch::Tensor> by_name_;
  std::string path_;
};

void read_state(const Entries& e, const std::string& prefix, models::ModelImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : model.state_dict()) tensor.copy_(e.shaped(prefix + name, tensor));
}

// The best weights, read into a copy of the current ones so they keep their own
// storage; empty when the run kept none (restore_best off).
models::StateDict read_best(const Entries& e, const models::ModelImpl& model) {
  auto best = model.state_dict();
  for (auto& [name, tensor] : best) {
    if (e.find("best." + name) == nullptr) return {};
    tensor = e.shaped("best." + name, tensor).clone();
  }
  return best;
}

void read_progress(const Entries& e, const std::string& phase, Progress& p) {
  p.best_epoch = e.scalar("meta.best_epoch").item<std::int64_t>();
  p.best_metric = e.scalar("meta.best_metric").item<double>();
  p.bad_epochs = e.scalar("meta.bad_epochs").item<std::int64_t>();
  p.stopped = e.scalar("meta.stopped").item<std::int64_t>() != 0;
  const auto history = e.at("meta.history").to(torch::kDouble).contiguous();
  if (history.dim() != 2 || history.size(1) != kHistoryFields)
    throw FormatError(e.path() + ": entry 'meta.history' is not a history");
  p.history.clear();
  for (std::int64_t i = 0; i < history.size(0); ++i)
    p.history.push_back(from_row(history[i].data_ptr<double>(), phase));
}

template <class State>
std::unique_ptr<State> read_adam(const Entries& e, const std::string& key, const torch::Tensor& p) {
  auto s = std::make_unique<State>();
  s->step(e.scalar(key + "step").template item<std::int64_t>());
  s->exp_avg(e.shaped(key + "exp_avg", p).to(p.device()));
  s->exp_avg_sq(e.shaped(key + "exp_avg_sq", p).to(p.device()));
  if (e.find(key + "max_exp_avg_sq") != nullptr)
    s->max_exp_avg_sq(e.shaped(key + "max_exp_avg_sq", p).to(p.device()));
  return s;
}

std::unique_ptr<torch::optim::OptimizerParamState> read_param_state(
    const Entries& e, const std::string& key, const torch::Tensor& p,
    torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<torch::optim::AdamW*>(&optimizer))
    return read_adam<torch::optim::AdamWParamState>(e, key, p);
  if (dynamic_cast<torch::optim::Adam*>(&optimizer))
    return read_adam<torch::optim::AdamParamState>(e, key, p);
  auto s = std::make_unique<torch::optim::SGDParamState>();
  s->momentum_buffer(e.shaped(key + "momentum_buffer", p).to(p.device()));
  return s;
}

void read_optimizer(const Entries& e, torch::optim::Optimizer& optimizer) {
  auto& states = optimizer.state();
  states.clear();
  const auto params = optimizer_params(optimizer);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto key = "optim." + std::to_string(i) + ".";
    const bool saved = e.find(key + "exp_avg") || e.find(key + "momentum_buffer");
    if (saved)
      states[compat::optimizer_state_key(states, params[i])] =
          read_param_state(e, key, params[i], optimizer);
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, const Progress& p) {
  models::StateDict out = {{"meta.format", text_tensor(kFormat)},
                           {"meta.arch", text_tensor(model.arch())},
                           {"meta.phase", text_tensor(o.phase)},
                           {"meta.best_epoch", torch::tensor(p.best_epoch)},
                           {"meta.best_metric", torch::tensor(p.best_metric, torch::kDouble)},
                           {"meta.bad_epochs", torch::tensor(p.bad_epochs)},
                           {"meta.stopped", torch::tensor(std::int64_t(p.stopped))},
                           {"meta.history", history_tensor(p.history)}};
  put_state(out, "model.", model.state_dict());
  put_state(out, "best.", p.best);
  put_optimizer(out, optimizer);
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  models::save_state_dict(out, path);  // beside the target, then renamed: never torn
}

bool load_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, Progress& p) {
  if (path.empty() || !fs::exists(path)) return false;
  models::StateDict state;
  try {
    state = models::read_state_dict(path);
  } catch (const InvalidArgument& e) {  // a TorchScript archive: code, never run
    throw FormatError(std::string(e.what()) + " (not a tlcore checkpoint)");
  }
  const Entries e(std::move(state), path);
  if (e.find("meta.format") == nullptr || e.text("meta.format") != kFormat)
    throw FormatError(path + ": not a tlcore checkpoint of this version (delete it to start over)");
  const auto arch = e.text("meta.arch");
  if (arch != model.arch())
    throw InvalidArgument(path + ": checkpoint of a " + arch + ", not a " + model.arch());
  const auto phase = e.text("meta.phase");
  if (phase != o.phase)
    throw InvalidArgument(path + ": checkpoint of phase '" + phase + "', not '" + o.phase + "'");
  read_progress(e, o.phase, p);
  read_state(e, "model.", model);
  p.best.clear();
  if (p.best_epoch >= 0) p.best = read_best(e, model);
  read_optimizer(e, optimizer);
  return true;
}

}  // namespace tlcore::detail
