#include "row_fingerprint.h"

#include <sys/stat.h>

#include <cstdio>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tlcore/augment/serialize.h"

namespace tlcore::detail {
namespace {

// FNV-1a: a change of any byte changes the hash; collisions between the
// versions of one cache slot are not a concern, so a cryptographic hash would buy nothing.
class Hash {
 public:
  Hash& bytes(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    for (std::size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ULL;
    return *this;
  }
  Hash& text(const std::string& s) { return bytes(s.data(), s.size() + 1); }  // with its NUL
  Hash& number(std::int64_t v) { return bytes(&v, sizeof v); }
  Hash& tensor(const torch::Tensor& t) {
    for (const std::int64_t d : t.sizes()) number(d);
    text(c10::toString(t.scalar_type()));
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    return bytes(c.data_ptr(), c.numel() * c.element_size());
  }
  std::string hex() const {
    char out[17];
    std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h_));
    return out;
  }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ULL;
};

std::string owner(const std::string& name) {
  const std::size_t dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}

// The frozen part's weights: parameters that do not train, and buffers of modules
// none of whose parameters train (the trainable tail changes between fits).
std::string frozen_weights(const models::ModelImpl& model, Hash& structure) {
  std::set<std::string> training;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad()) training.insert(owner(p.key()));
  }
  Hash weights;
  for (const auto& p : model.named_parameters()) {
    structure.text(p.key());
    for (const std::int64_t d : p.value().sizes()) structure.number(d);
    if (!p.value().requires_grad()) weights.text(p.key()).tensor(p.value());
  }
  for (const auto& b : model.named_buffers()) {
    if (!training.count(owner(b.key()))) weights.text(b.key()).tensor(b.value());
  }
  return weights.hex();
}

// The file a sample's source names: "path", "archive:member" or "file#record".
std::string file_of(const std::string& source) {
  struct stat st {};
  if (::stat(source.c_str(), &st) == 0) return source;
  for (const char separator : {'#', ':'}) {
    const std::size_t at = source.rfind(separator);
    if (at != std::string::npos && ::stat(source.substr(0, at).c_str(), &st) == 0) {
      return source.substr(0, at);
    }
  }
  return {};
}

// Which samples, with which labels, and the versions (size, modification time) of
// the files holding them: rewriting a file in place makes the rows stale too.
void hash_samples(const Dataset& data, Hash& names, Hash& versions) {
  names.number(data.size());
  std::string previous;
  for (std::int64_t i = 0; i < data.size(); ++i) {
    const std::string source = data.source(i);
    names.text(source).number(data.label(i));
    const std::string file = file_of(source);
    if (file.empty() || file == previous) continue;
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0) {
      versions.text(file).number(st.st_size).number(st.st_mtim.tv_sec).number(st.st_mtim.tv_nsec);
    }
    previous = file;
  }
}

}  // namespace

RowFingerprint row_fingerprint(const models::ModelImpl& model, const Loader& loader,
                               std::int64_t epoch, std::int64_t blocks, bool flip,
                               torch::ScalarType dtype, const FitOptions& o, const Amp& amp,
                               const std::string& role) {
  Hash structure;
  structure.text(role).number(blocks);
  const std::string weights = frozen_weights(model, structure);
  Hash names, versions;
  hash_samples(loader.dataset(), names, versions);
  const std::string data = names.hex();
  const LoaderOptions& l = loader.options();
  std::ostringstream options;
  options << "seed=" << l.seed << " epoch=" << epoch << " batch=" << l.batch_size
          << " shuffle=" << l.shuffle << " drop_last=" << l.drop_last << " rank=" << l.rank
          << " world=" << l.world_size << " buffer=" << l.shuffle_buffer
          << " skip_corrupt=" << l.skip_corrupt << " flip=" << flip
          << " dtype=" << c10::toString(dtype) << " channels_last=" << o.channels_last
          << " compile_frozen=" << o.compile_frozen << " amp=" << amp.enabled << ":"
          << c10::toString(amp.dtype) << " device=" << o.device;
  RowFingerprint f;
  f.name = role + "-" + data + "-" + structure.hex();
  f.full = "tlcore rows 1; " + f.name + "; files=" + versions.hex() + "; weights=" + weights +
           "; pipeline=" + Hash().text(pipeline_to_json(loader.pipeline()).dump()).hex() + "; " +
           options.str();
  return f;
}

}  // namespace tlcore::detail
