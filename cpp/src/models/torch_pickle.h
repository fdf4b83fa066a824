// The slice of Python's pickle format that torch.save writes for state dicts
// (private to cpp/src/models). LibTorch's own unpickler turns the top-level
// collections.OrderedDict into None, so it cannot read torch.save's output.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tlcore::models::detail {

struct PyObject;
using PyRef = std::shared_ptr<PyObject>;

struct PyObject {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kBigInt,
    kFloat,
    kString,
    kTuple,
    kList,
    kDict,
    kGlobal,
    kStorage,
    kTensor
  };
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0.0;
  // kString: the text; kGlobal: "module.name"; kBigInt: little-endian bytes.
  std::string s;
  // kTuple and kList: the elements; kDict: keys and values alternating.
  std::vector<PyRef> items;
  // kStorage: a 1-D tensor over the whole storage; kTensor: the tensor.
  torch::Tensor tensor;
};

struct PickleInput {
  const char* data;
  size_t size;
  size_t pos = 0;
};

// Returns the storage for a persistent id ('storage', type, key, location, numel).
using StorageLoader =
    std::function<torch::Tensor(const std::string& key, torch::ScalarType dtype, int64_t numel)>;

// Runs one pickle from in.pos up to its STOP opcode; in.pos ends just past it.
// Throws FormatError naming `source` for malformed or truncated input.
PyRef unpickle(PickleInput& in, const StorageLoader& load_storage, const std::string& source);

// The value under `key` in a kDict, or nullptr.
const PyRef* dict_entry(const PyRef& dict, const std::string& key);

// The object a torch.save file holds (zip format, or the legacy format of torch < 1.6),
// read without running any code. A file that calls anything but the tensor and
// OrderedDict rebuilds is refused (FormatError naming the global).
// NotFound for a missing file, FormatError for one that is not such a file,
// InvalidArgument for a TorchScript archive.
PyRef read_pickle_file(const std::string& path);

}  // namespace tlcore::models::detail
