#include "tlcore/models/checkpoint.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "tlcore/error.h"
#include "torch_pickle.h"

namespace tlcore::models {
namespace {

using detail::PyObject;
using detail::PyRef;

bool all_tensors(const PyRef& dict) {
  for (size_t k = 1; k < dict->items.size(); k += 2) {
    if (dict->items[k]->kind != PyObject::Kind::kTensor) return false;
  }
  return true;
}

StateDict to_state_dict(const PyRef& root, const std::string& path) {
  if (root->kind != PyObject::Kind::kDict) {
    throw FormatError(path + ": holds no dict of tensors (is it a whole pickled model?)");
  }
  PyRef dict = root;
  if (!all_tensors(root)) {
    for (const char* key : {"state_dict", "model"}) {
      const PyRef* inner = detail::dict_entry(root, key);
      if (inner != nullptr && (*inner)->kind == PyObject::Kind::kDict && all_tensors(*inner)) {
        dict = *inner;
        break;
      }
    }
  }
  StateDict out;
  for (size_t k = 0; k + 1 < dict->items.size(); k += 2) {
    const auto& key = dict->items[k];
    const auto& value = dict->items[k + 1];
    if (key->kind != PyObject::Kind::kString) throw FormatError(path + ": a key is not a string");
    if (value->kind != PyObject::Kind::kTensor) {
      throw FormatError(path + ": entry '" + key->s + "' is not a plain tensor");
    }
    out.emplace_back(key->s, value->tensor);
  }
  return out;
}

std::string list(const std::vector<std::string>& names) {
  constexpr size_t kShown = 8;
  std::string s;
  for (size_t k = 0; k < names.size() && k < kShown; ++k) s += (k ? ", " : "") + names[k];
  if (names.size() > kShown) s += ", ... (" + std::to_string(names.size() - kShown) + " more)";
  return s;
}

std::string shape(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

StateDict read_state_dict(const std::string& path) {
  return to_state_dict(detail::read_pickle_file(path), path);
}

void save_state_dict(const StateDict& state, const std::string& path) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, tensor] : state) {
    dict.insert(name, tensor.detach().to(torch::kCPU).contiguous());
  }
  const auto bytes = torch::pickle_save(dict);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::remove(tmp.c_str());
      throw Error(path + ": cannot write the checkpoint");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write the checkpoint: " + ec.message());
  }
}

std::vector<std::string> load_state_dict(ModelImpl& model, const StateDict& state,
                                         const LoadOptions& options, const std::string& source) {
  std::map<std::string, torch::Tensor> own;
  std::vector<std::string> order;
  for (const auto& [name, tensor] : model.state_dict()) {
    own.emplace(name, tensor);
    order.push_back(name);
  }
  const auto& head = model.head_name();

  // The head loads only when it fits entry for entry; otherwise it may be dropped.
  std::vector<std::string> dropped;
  bool drop = false;
  if (options.drop_head()) {
    std::set<std::string> theirs, ours;
    bool fits = true;
    for (const auto& [name, tensor] : state) {
      if (!has_prefix(name, head)) continue;
      theirs.insert(name);
      auto it = own.find(name);
      fits = fits && it != own.end() && it->second.sizes() == tensor.sizes();
    }
    for (const auto& name : order) {
      if (has_prefix(name, head)) ours.insert(name);
    }
    drop = !fits || theirs != ours;
    if (drop) dropped.assign(theirs.begin(), theirs.end());
  }
  auto is_dropped = [&](const std::string& name) { return drop && has_prefix(name, head); };

  std::vector<std::string> unexpected, mismatched, missing;
  std::set<std::string> present, loadable;
  for (const auto& [name, tensor] : state) {
    if (is_dropped(name)) continue;
    auto it = own.find(name);
    if (it == own.end()) {
      unexpected.push_back(name);
      continue;
    }
    present.insert(name);
    if (it->second.sizes() == tensor.sizes()) {
      loadable.insert(name);
    } else {
      mismatched.push_back(name + " (checkpoint " + shape(tensor) + ", model " + shape(it->second) +
                           ")");
    }
  }
  bool head_only = !mismatched.empty();
  for (const auto& name : order) {
    if (!present.count(name) && !is_dropped(name)) missing.push_back(name);
    if (present.count(name) && !loadable.count(name))
      head_only = head_only && has_prefix(name, head);
  }
  const bool fail =
      !mismatched.empty() || (options.strict() && (!missing.empty() || !unexpected.empty()));
  if (fail) {
    std::string msg = source + ": does not fit " + model.arch() + ":";
    if (!missing.empty())
      msg += " missing " + std::to_string(missing.size()) + " [" + list(missing) + "];";
    if (!unexpected.empty()) {
      msg += " unexpected " + std::to_string(unexpected.size()) + " [" + list(unexpected) + "];";
    }
    if (!mismatched.empty()) {
      msg +=
          " shape mismatch " + std::to_string(mismatched.size()) + " [" + list(mismatched) + "];";
    }
    if (head_only && !options.drop_head()) {
      msg += " the head '" + head + "' differs: load with drop_head to keep a fresh head";
    }
    throw InvalidArgument(msg);
  }

  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : state) {
    if (loadable.count(name)) own.at(name).copy_(tensor);
  }
  return dropped;
}

std::vector<std::string> load_checkpoint(ModelImpl& model, const std::string& path,
                                         const LoadOptions& options) {
  return load_state_dict(model, read_state_dict(path), options, path);
}

}  // namespace tlcore::models
