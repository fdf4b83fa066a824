// tlcore-predict MODEL IMAGE...: labels and confidences in C++ alone (no Python),
// from a saved model (.tlc, read without running pickled code) or one exported with
// tlcore.export(..., format="torchscript"). One line per image: path, label
// ("unknown" by the model's rule), probability, tab-separated. A bad image
// is reported on stderr and the others still answered; the exit status is then 1.
// TLCORE_PRECISION (fp32, bf16, int8 or auto) sets what a .tlc model computes in, as
// for the service; a fallback to fp32 is one line on stderr.
#include <caffe2/serialize/inline_container.h>
#include <torch/script.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tlcore/augment/rng.h"
#include "tlcore/data/decode.h"
#include "tlcore/error.h"
#include "tlcore/infer/prediction.h"
#include "tlcore/infer/predictor.h"
#include "tlcore/models/model_file.h"
#include "tlcore/threads.h"

namespace {

using Scoring = std::function<tlcore::Scores(const std::string& image_path)>;

struct Runner {
  tlcore::models::ModelSpec spec;
  Scoring scores;
};

// TorchScript archives hold constants.pkl; torch.save files (a .tlc) do not.
bool is_torchscript(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  char head[4] = {};
  file.read(head, 4);
  if (file.gcount() != 4 || std::string(head, 4) != "PK\x03\x04") return false;
  return caffe2::serialize::PyTorchStreamReader(path).hasRecord("constants.pkl");
}

// The spec an export carries in tlcore.json (format 2), or one rebuilt from format 1's preset.
tlcore::models::ModelSpec exported_spec(const std::string& text, const std::string& path) {
  const auto meta = nlohmann::json::parse(text);
  if (meta.contains("spec")) return tlcore::models::spec_from_json(meta.at("spec"), path);
  auto v1 = meta;
  v1["head"] = {{"kind", "linear"}, {"dropout", 0.0}, {"hidden", nlohmann::json::array()}};
  v1["in_channels"] = meta.at("preprocess").at("channels");
  return tlcore::models::spec_from_v1(v1, path);
}

Runner torchscript_runner(const std::string& path) {
  torch::jit::ExtraFilesMap extra{{"tlcore.json", ""}};
  auto module = std::make_shared<torch::jit::Module>(torch::jit::load(path, torch::kCPU, extra));
  if (extra["tlcore.json"].empty())
    throw tlcore::FormatError(path +
                              ": a TorchScript file without tlcore.json (export it with "
                              "tlcore.export(model, path, format=\"torchscript\"))");
  module->eval();
  Runner r{exported_spec(extra["tlcore.json"], path), nullptr};
  const auto pipeline = r.spec.pipeline;
  const double temperature = r.spec.temperature;
  r.scores = [module, pipeline, temperature](const std::string& image_path) {
    c10::InferenceMode guard;
    tlcore::Rng rng(0);
    const auto& p = *pipeline;
    const auto image = p.augment(tlcore::read_image(image_path, p.decode_options()), rng);
    auto x = torch::empty({1, p.channels(), p.out_height(), p.out_width()});
    p.normalize_into(image, x.data_ptr<float>());
    return tlcore::scores_of(module->forward({x}).toTensor()[0], temperature);
  };
  return r;
}

Runner model_file_runner(const std::string& path) {
  auto loaded = tlcore::models::load_model(path);
  tlcore::PredictorOptions options;
  options.max_delay_ms = 0;
  options.device = "cpu";
  if (const char* precision = std::getenv("TLCORE_PRECISION")) options.precision = precision;
  auto predictor = std::make_shared<tlcore::Predictor>(loaded.model.ptr(), loaded.spec, options);
  if (!predictor->precision_note().empty())
    std::cerr << "tlcore-predict: " << path << ": " << predictor->precision_note() << '\n';
  Runner r{loaded.spec, nullptr};
  r.scores = [predictor](const std::string& image_path) {
    std::ifstream file(image_path, std::ios::binary);
    if (!file) throw tlcore::NotFound(image_path + ": no such image file");
    const std::string bytes((std::istreambuf_iterator<char>(file)), {});
    return predictor->predict(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(),
                              image_path);
  };
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: tlcore-predict MODEL IMAGE...\n"
                 "MODEL is a .tlc file or a TorchScript export. Prints path, label and\n"
                 "probability for each image (tab-separated). TLCORE_PRECISION=fp32|bf16|\n"
                 "int8|auto sets what a .tlc model computes in.\n";
    return 2;
  }
  Runner runner;
  try {
    const char* precision = std::getenv("TLCORE_PRECISION");
    if (precision != nullptr && std::string(precision) == "int8")
      tlcore::models::run_int8_without_amx();  // before any model runs
    tlcore::set_num_threads(0);
    runner = is_torchscript(argv[1]) ? torchscript_runner(argv[1]) : model_file_runner(argv[1]);
  } catch (const std::exception& e) {
    std::cerr << "tlcore-predict: " << e.what() << '\n';
    return 2;
  }
  int status = 0;
  for (int i = 2; i < argc; ++i) {
    try {
      const auto scores = runner.scores(argv[i]);
      const auto probs = scores.probabilities.contiguous();
      const auto p =
          tlcore::decide(probs.data_ptr<float>(), scores.energy.item<double>(), runner.spec.classes,
                         1, {runner.spec.threshold, runner.spec.min_energy});
      std::cout << argv[i] << '\t' << p.label << '\t' << p.confidence << '\n';
    } catch (const std::exception& e) {
      std::cerr << "tlcore-predict: " << e.what() << '\n';
      status = 1;
    }
  }
  return status;
}
