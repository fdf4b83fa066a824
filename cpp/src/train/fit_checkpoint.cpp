#include "fit_checkpoint.h"

#include <filesystem>
#include <vector>

#include "tlcore/error.h"

namespace tlcore::detail {
namespace {

namespace fs = std::filesystem;

// Every field of the history as one row of doubles, so the checkpoint stores it as a tensor.
constexpr int kHistoryFields = 10;

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

void write_state(torch::serialize::OutputArchive& archive, const std::string& prefix,
                 const models::StateDict& state) {
  for (const auto& [name, tensor] : state) archive.write(prefix + name, tensor.contiguous(), true);
}

void read_state(torch::serialize::InputArchive& archive, const std::string& prefix,
                models::ModelImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    torch::Tensor t;
    archive.read(prefix + item.key(), t);
    item.value().copy_(t);
  }
  for (auto& item : model.named_buffers()) {
    torch::Tensor t;
    archive.read(prefix + item.key(), t, true);
    item.value().copy_(t);
  }
}

// The best weights, read into a copy of the current ones so they keep their own
// storage; empty when the run kept none (restore_best off).
models::StateDict read_best(torch::serialize::InputArchive& archive,
                            const models::ModelImpl& model) {
  auto best = model.state_dict();
  for (auto& [name, tensor] : best) {
    torch::Tensor t;
    if (!archive.try_read("best." + name, t, true)) return {};
    tensor = t.clone();
  }
  return best;
}

std::string read_string(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue v;
  archive.read(key, v);
  return v.toStringRef();
}

c10::IValue read_value(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue v;
  archive.read(key, v);
  return v;
}

void read_progress(torch::serialize::InputArchive& archive, const std::string& phase, Progress& p) {
  p.best_epoch = read_value(archive, "meta.best_epoch").toInt();
  p.best_metric = read_value(archive, "meta.best_metric").toDouble();
  p.bad_epochs = read_value(archive, "meta.bad_epochs").toInt();
  p.stopped = read_value(archive, "meta.stopped").toBool();
  torch::Tensor history;
  archive.read("meta.history", history, true);
  history = history.contiguous();
  p.history.clear();
  for (std::int64_t i = 0; i < history.size(0); ++i)
    p.history.push_back(from_row(history[i].data_ptr<double>(), phase));
}

}  // namespace

void save_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, const Progress& p) {
  torch::serialize::OutputArchive archive;
  archive.write("meta.arch", c10::IValue(model.arch()));
  archive.write("meta.phase", c10::IValue(o.phase));
  archive.write("meta.best_epoch", c10::IValue(p.best_epoch));
  archive.write("meta.best_metric", c10::IValue(p.best_metric));
  archive.write("meta.bad_epochs", c10::IValue(p.bad_epochs));
  archive.write("meta.stopped", c10::IValue(p.stopped));
  archive.write("meta.history", history_tensor(p.history), true);
  write_state(archive, "model.", model.state_dict());
  write_state(archive, "best.", p.best);
  torch::serialize::OutputArchive opt_archive;
  optimizer.save(opt_archive);
  archive.write("optimizer", opt_archive);
  // Write beside the target, then rename: a kill mid-write never leaves a torn checkpoint.
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  archive.save_to(tmp);
  fs::rename(tmp, target);
}

bool load_checkpoint(const std::string& path, const FitOptions& o, models::ModelImpl& model,
                     torch::optim::Optimizer& optimizer, Progress& p, torch::Device device) {
  if (path.empty() || !fs::exists(path)) return false;
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, device);
  } catch (const c10::Error& e) {
    throw FormatError(path + ": not a readable tlcore checkpoint (" + e.what_without_backtrace() +
                      ")");
  }
  const auto arch = read_string(archive, "meta.arch");
  if (arch != model.arch())
    throw InvalidArgument(path + ": checkpoint of a " + arch + ", not a " + model.arch());
  const auto phase = read_string(archive, "meta.phase");
  if (phase != o.phase)
    throw InvalidArgument(path + ": checkpoint of phase '" + phase + "', not '" + o.phase + "'");
  read_progress(archive, o.phase, p);
  read_state(archive, "model.", model);
  p.best.clear();
  if (p.best_epoch >= 0) p.best = read_best(archive, model);
  torch::serialize::InputArchive opt_archive;
  archive.read("optimizer", opt_archive);
  optimizer.load(opt_archive);
  return true;
}

}  // namespace tlcore::detail
