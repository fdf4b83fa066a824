// Models made from what describes them: a spec, or a model file. Apart from
// spec.cpp and model_file.cpp, whose readers build without the model zoo.
#include "tlcore/error.h"
#include "tlcore/models/checkpoint.h"
#include "tlcore/models/model_file.h"
#include "tlcore/models/registry.h"
#include "tlcore/models/spec.h"

namespace tlcore::models {

Model build_model(const ModelSpec& spec) {
  auto model = create_model(spec.arch, static_cast<int64_t>(spec.classes.size()), spec.options);
  if (spec.head.kind != "linear" || !spec.head.hidden.empty()) {
    model->set_head(HeadOptions(static_cast<int64_t>(spec.classes.size()))
                        .kind(parse_head_kind(spec.head.kind))
                        .dropout(spec.head.dropout)
                        .hidden(spec.head.hidden));
  }
  return model;
}

LoadedModel load_model(const std::string& path) {
  auto file = read_model_file(path);
  Model model = build_model(file.spec);
  load_state_dict(*model, file.state, LoadOptions().strict(true), path);
  model->eval();
  return {std::move(file.spec), model};
}

}  // namespace tlcore::models
