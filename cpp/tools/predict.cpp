// tlcore-predict MODEL IMAGE...: labels and confidences from a model exported with
// tlcore.export(..., format="torchscript"), in C++ alone (no Python). One line per
// image: path, label ("unknown" below the model's threshold), probability, tab-separated.
#include <torch/script.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tlcore/augment/pipeline.h"
#include "tlcore/augment/rng.h"
#include "tlcore/data/decode.h"
#include "tlcore/error.h"
#include "tlcore/threads.h"

namespace {

struct Exported {
  torch::jit::Module module;
  std::vector<std::string> classes;
  double threshold = 0;
  std::shared_ptr<tlcore::Pipeline> pipeline;
};

Exported load(const std::string& path) {
  torch::jit::ExtraFilesMap extra{{"tlcore.json", ""}};
  Exported e{torch::jit::load(path, torch::kCPU, extra)};
  if (extra["tlcore.json"].empty())
    throw tlcore::FormatError(path +
                              ": a TorchScript file without tlcore.json (export it with "
                              "tlcore.export(model, path, format=\"torchscript\"))");
  const auto meta = nlohmann::json::parse(extra["tlcore.json"]);
  e.classes = meta.at("classes").get<std::vector<std::string>>();
  e.threshold = meta.value("threshold", 0.0);
  const auto& pre = meta.at("preprocess");
  const int size = pre.at("image_size").get<int>();
  const int channels = pre.at("channels").get<int>();
  const auto preset =
      tlcore::Pipeline::preset(pre.at("transform").get<std::string>(), size, channels);
  e.pipeline = std::make_shared<tlcore::Pipeline>(
      preset.ops(), size, size, pre.at("mean").get<std::vector<float>>(),
      pre.at("std").get<std::vector<float>>(), channels);
  e.module.eval();
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: tlcore-predict MODEL.pt IMAGE...\n"
                 "Prints path, label and probability for each image (tab-separated).\n";
    return 2;
  }
  try {
    tlcore::set_num_threads(0);
    const Exported model = load(argv[1]);
    const auto& p = *model.pipeline;
    c10::InferenceMode guard;
    for (int i = 2; i < argc; ++i) {
      tlcore::Rng rng(0);
      const auto image = p.augment(tlcore::read_image(argv[i], p.decode_options()), rng);
      auto x = torch::empty({1, p.channels(), p.out_height(), p.out_width()});
      p.normalize_into(image, x.data_ptr<float>());
      const auto probs = torch::softmax(
          const_cast<torch::jit::Module&>(model.module).forward({x}).toTensor(), 1)[0];
      const auto top = probs.argmax().item<std::int64_t>();
      const double confidence = probs[top].item<double>();
      const std::string label =
          confidence >= model.threshold ? model.classes.at(std::size_t(top)) : "unknown";
      std::cout << argv[i] << '\t' << label << '\t' << confidence << '\n';
    }
  } catch (const std::exception& e) {
    std::cerr << "tlcore-predict: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
