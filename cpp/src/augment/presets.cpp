// The named pipelines of Pipeline::preset.
#include <cmath>
#include <memory>
#include <numeric>

#include "tlcore/augment/ops.h"
#include "tlcore/augment/pipeline.h"
#include "tlcore/error.h"

namespace tlcore {

namespace {

constexpr const char* kPresetNames = "imagenet-train, imagenet-eval, cifar-train, cifar-eval";

// Luma is a weighted average of the colour channels, so averaging the colour
// statistics puts grey inputs on about the scale the colour preset gives.
std::vector<float> for_channels(const std::vector<float>& rgb, int channels) {
  if (channels == 3) return rgb;
  return {std::accumulate(rgb.begin(), rgb.end(), 0.0f) / static_cast<float>(rgb.size())};
}

}  // namespace

Pipeline Pipeline::preset(const std::string& name, int size, int channels) {
  if (size <= 0) {
    throw InvalidArgument("Pipeline::preset(\"" + name + "\"): size must be positive, got " +
                          std::to_string(size));
  }
  const std::vector<float> imagenet_mean{0.485f, 0.456f, 0.406f};
  const std::vector<float> imagenet_std{0.229f, 0.224f, 0.225f};
  const std::vector<float> cifar_mean{0.4914f, 0.4822f, 0.4465f};
  const std::vector<float> cifar_std{0.2470f, 0.2435f, 0.2616f};
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
  return Pipeline(std::move(ops), size, size,
                  for_channels(imagenet ? imagenet_mean : cifar_mean, channels),
                  for_channels(imagenet ? imagenet_std : cifar_std, channels), channels);
}

}  // namespace tlcore
