// The named pipelines of Pipeline::preset.
#include <cmath>
#include <memory>

#include "tlcore/augment/normalization.h"
#include "tlcore/augment/ops.h"
#include "tlcore/augment/pipeline.h"
#include "tlcore/error.h"

namespace tlcore {

namespace {

constexpr const char* kPresetNames = "imagenet-train, imagenet-eval, cifar-train, cifar-eval";

std::vector<float> floats(const std::vector<double>& values) {
  return {values.begin(), values.end()};
}

}  // namespace

Pipeline Pipeline::preset(const std::string& name, int size, int channels) {
  if (size <= 0) {
    throw InvalidArgument("Pipeline::preset(\"" + name + "\"): size must be positive, got " +
                          std::to_string(size));
  }
  std::vector<OpPtr> ops;
  const bool imagenet = name == "imagenet-train" || name == "imagenet-eval";
  if (name == "imagenet-train") {
    ops.push_back(std::make_shared<RandomResizedCrop>(size));
    ops.push_back(std::make_shared<RandomHorizontalFlip>(0.5));
  } else if (name == "imagenet-eval") {
    // torchvision's reference evaluation: Resize(256) + CenterCrop(224), scaled with size.
    ops.push_back(std::make_shared<Resize>(static_cast<int>(std::lround(size * 256.0 / 224.0))));
    ops.push_back(std::make_shared<CenterCrop>(size));
  } else if (name == "cifar-train" || name == "cifar-eval") {
    if (size != 32) ops.push_back(std::make_shared<Resize>(size, size));
    if (name == "cifar-train") {
      // The classic 4-pixel padding at 32, kept in proportion for other sizes.
      const int padding = static_cast<int>(std::lround(size / 8.0));
      ops.push_back(std::make_shared<PadRandomCrop>(size, padding));
      ops.push_back(std::make_shared<RandomHorizontalFlip>(0.5));
    }
  } else {
    throw InvalidArgument("Pipeline::preset: unknown preset \"" + name +
                          "\"; known presets: " + kPresetNames);
  }
  const auto stats =
      for_channels(imagenet ? imagenet_normalization() : cifar_normalization(), channels);
  return Pipeline(std::move(ops), size, size, floats(stats.mean), floats(stats.std), channels);
}

}  // namespace tlcore
