// torch.save files read without running code: the zip format, and the legacy
// format of torch < 1.6 (a magic number, protocol and sys info pickles, the main
// pickle, then the raw storages).
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <map>
#include <vector>

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
    // Compared before multiplying: a hostile numel would overflow the byte count.
    const size_t element = c10::elementSize(dtype);
    if (numel < 0 || static_cast<size_t>(numel) > size / element)
      throw FormatError(path + ": storage " + key + " is truncated");
    const auto bytes = static_cast<size_t>(numel) * element;
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
  if (const PyRef* le = detail::dict_entry(sys_info, "little_endian"); le && (*le)->i == 0) {
    throw Unsupported(path + ": was saved on a big-endian machine");
  }
  // Storages come after the main pickle: allocate them now, fill them below.
  std::map<std::string, torch::Tensor> storages;
  detail::StorageLoader defer = [&](const std::string& key, torch::ScalarType dtype,
                                    int64_t numel) {
    auto it = storages.find(key);
    if (it != storages.end()) return it->second;
    // Every storage's bytes follow in the file: a larger one cannot be real.
    if (numel < 0 || static_cast<size_t>(numel) > bytes.size() / c10::elementSize(dtype))
      throw FormatError(path + ": storage " + key + " is larger than the file");
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

}  // namespace tlcore::models
