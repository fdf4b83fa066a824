#include "tlcore/models/model_file.h"

#include <nlohmann/json.hpp>

#include "tlcore/error.h"
#include "torch_pickle.h"

namespace tlcore::models {
namespace {

using detail::PyObject;
using detail::PyRef;
using nlohmann::json;

// Format 1 stored its entries as pickled plain data: a tensor or any other object where
// JSON types belong is refused.
json to_json(const PyRef& o, const std::string& path) {
  switch (o->kind) {
    case PyObject::Kind::kNone:
      return nullptr;
    case PyObject::Kind::kBool:
      return o->i != 0;
    case PyObject::Kind::kInt:
      return o->i;
    case PyObject::Kind::kFloat:
      return o->f;
    case PyObject::Kind::kString:
      return o->s;
    case PyObject::Kind::kTuple:
    case PyObject::Kind::kList: {
      json out = json::array();
      for (const auto& item : o->items) out.push_back(to_json(item, path));
      return out;
    }
    case PyObject::Kind::kDict: {
      json out = json::object();
      for (size_t k = 0; k + 1 < o->items.size(); k += 2) {
        if (o->items[k]->kind != PyObject::Kind::kString)
          throw FormatError(path + ": a model spec key is not a string");
        out[o->items[k]->s] = to_json(o->items[k + 1], path);
      }
      return out;
    }
    default:
      throw FormatError(path + ": the model spec holds " +
                        (o->s.empty() ? std::string("an object") : "a " + o->s) +
                        " where only plain data belongs");
  }
}

StateDict state_of(const PyRef& root, const std::string& path) {
  const PyRef* state = detail::dict_entry(root, "state_dict");
  if (state == nullptr || (*state)->kind != PyObject::Kind::kDict)
    throw FormatError(path + ": a tlcore model file without its state_dict");
  StateDict out;
  for (size_t k = 0; k + 1 < (*state)->items.size(); k += 2) {
    const auto& key = (*state)->items[k];
    const auto& value = (*state)->items[k + 1];
    if (key->kind != PyObject::Kind::kString || value->kind != PyObject::Kind::kTensor)
      throw FormatError(path + ": state_dict entry " + (key->s.empty() ? "?" : key->s) +
                        " is not a named tensor");
    out.emplace_back(key->s, value->tensor);
  }
  return out;
}

}  // namespace

ModelFile read_model_file(const std::string& path) {
  const PyRef root = detail::read_pickle_file(path);
  const PyRef* format = detail::dict_entry(root, "format");
  if (format == nullptr || (*format)->kind != PyObject::Kind::kString)
    throw FormatError(path +
                      ": not a tlcore model file (no \"format\" entry; a plain state "
                      "dict loads as weights= of a Learner)");
  const std::string& name = (*format)->s;
  ModelFile file;
  if (name == kModelFormat) {
    const PyRef* spec = detail::dict_entry(root, "spec");
    if (spec == nullptr || (*spec)->kind != PyObject::Kind::kString)
      throw FormatError(path + ": a tlcore model file without its spec (JSON text)");
    file.spec = spec_from_text((*spec)->s, path);
  } else if (name == kModelFormatV1) {
    json v1 = json::object();
    for (const char* key :
         {"arch", "classes", "in_channels", "head", "preprocess", "threshold", "history"})
      if (const PyRef* value = detail::dict_entry(root, key)) v1[key] = to_json(*value, path);
    file.spec = spec_from_v1(v1, path);
  } else if (name.rfind("tlcore-model/", 0) == 0) {
    throw FormatError(path + ": model format '" + name + "' is newer than this tlcore reads ('" +
                      kModelFormat + "'); upgrade tlcore");
  } else {
    throw FormatError(path + ": not a tlcore model file (format '" + name + "')");
  }
  file.state = state_of(root, path);
  return file;
}

}  // namespace tlcore::models
