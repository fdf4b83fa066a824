#include "tlcore/models/checkpoint.h"

#include <caffe2/serialize/inline_container.h>

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

// Legacy files start with pickles of this number, the format version and sys info.
constexpr unsigned char kLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                          0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t kLegacyProtocol = 1001;

const PyRef* dict_get(const PyRef& dict, const std::string& key) {
  for (size_t k = 0; k + 1 < dict->items.size(); k += 2) {
    if (dict->items[k]->kind == PyObject::Kind::kString && dict->items[k]->s == key) {
      return &dict->items[k + 1];
    }
  }
  return nullptr;
}

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
      const PyRef* inner = dict_get(root, key);
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

PyRef read_zip(const std::string& path) {
  auto reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  if (reader->hasRecord("constants.pkl") || !reader->hasRecord("data.pkl")) {
    throw InvalidArgument(path +
                          ": is a TorchScript module or another archive, not a state dict; "
                          "use it as a TorchScript backbone instead");
  }
  std::map<std::string, torch::Tensor> storages;
  detail::StorageLoader load = [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    auto it = storages.find(key);
    if (it != storages.end()) return it->second;
    const std::string record = "data/" + key;
    if (!reader->hasRecord(record)) throw FormatError(path + ": storage " + key + " is missing");
    auto [data, size] = reader->getRecord(record);
    const auto bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
    if (size < bytes) throw FormatError(path + ": storage " + key + " is truncated");
    auto storage = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    std::memcpy(storage.data_ptr(), data.get(), bytes);
    storages.emplace(key, storage);
    return storage;
  };
  auto [pkl, pkl_size] = reader->getRecord("data.pkl");
  detail::PickleInput in{static_cast<const char*>(pkl.get()), pkl_size};
  return detail::unpickle(in, load, path);
}

PyRef read_legacy(const std::vector<char>& bytes, const std::string& path) {
  detail::PickleInput in{bytes.data(), bytes.size()};
  detail::StorageLoader none = [&](const std::string&, torch::ScalarType,
                                   int64_t) -> torch::Tensor {
    throw FormatError(path + ": storage outside the main pickle");
  };
  auto magic = detail::unpickle(in, none, path);
  if (magic->kind != PyObject::Kind::kBigInt || magic->s.size() != sizeof kLegacyMagic ||
      std::memcmp(magic->s.data(), kLegacyMagic, sizeof kLegacyMagic) != 0) {
    throw FormatError(path + ": not a PyTorch checkpoint (bad magic number)");
  }
  auto protocol = detail::unpickle(in, none, path);
  if (protocol->kind != PyObject::Kind::kInt || protocol->i != kLegacyProtocol) {
    throw Unsupported(path + ": unsupported legacy checkpoint protocol");
  }
  auto sys_info = detail::unpickle(in, none, path);
  if (const PyRef* le = dict_get(sys_info, "little_endian"); le && (*le)->i == 0) {
    throw Unsupported(path + ": was saved on a big-endian machine");
  }
  // Storages come after the main pickle: allocate them now, fill them below.
  std::map<std::string, torch::Tensor> storages;
  detail::StorageLoader defer = [&](const std::string& key, torch::ScalarType dtype,
                                    int64_t numel) {
    auto it = storages.find(key);
    if (it != storages.end()) return it->second;
    auto storage = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    storages.emplace(key, storage);
    return storage;
  };
  auto root = detail::unpickle(in, defer, path);
  auto keys = detail::unpickle(in, none, path);
  if (keys->kind != PyObject::Kind::kList) throw FormatError(path + ": no storage list");
  for (const auto& key : keys->items) {
    auto it = storages.find(key->s);
    if (it == storages.end()) throw FormatError(path + ": unknown storage " + key->s);
    int64_t numel = 0;
    if (bytes.size() - in.pos < 8) throw FormatError(path + ": truncated");
    std::memcpy(&numel, bytes.data() + in.pos, 8);
    in.pos += 8;
    auto& storage = it->second;
    const size_t n = static_cast<size_t>(storage.numel()) * storage.element_size();
    if (numel != storage.numel() || bytes.size() - in.pos < n) {
      throw FormatError(path + ": storage " + key->s + " is truncated or has the wrong size");
    }
    std::memcpy(storage.data_ptr(), bytes.data() + in.pos, n);
    in.pos += n;
  }
  return root;
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

namespace detail {

PyRef read_pickle_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw NotFound(path + ": no such checkpoint file");
  char head[4] = {};
  file.read(head, 4);
  if (file.gcount() == 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) {
    try {
      return read_zip(path);
    } catch (const c10::Error& e) {
      // A damaged record inside an archive whose directory was readable.
      throw FormatError(path + ": damaged PyTorch archive: " + e.what_without_backtrace());
    }
  }
  if (file.gcount() >= 2 && static_cast<unsigned char>(head[0]) == 0x80) {
    file.seekg(0);
    std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                            std::istreambuf_iterator<char>());
    return read_legacy(bytes, path);
  }
  throw FormatError(path + ": not a PyTorch checkpoint (neither a zip archive nor a pickle)");
}

}  // namespace detail

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
