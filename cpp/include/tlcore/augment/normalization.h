// The per-channel statistics that images are normalised with, in [0, 1] units
// (torchvision's Normalize after ToTensor): the one definition that the presets,
// the model registry's preprocessing and the bindings share.
#pragma once

#include <vector>

namespace tlcore {

struct Normalization {
  std::vector<double> mean;
  std::vector<double> std;
};

// torchvision's ImageNet statistics, used by every ImageNet checkpoint tlcore loads.
inline Normalization imagenet_normalization() {
  return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};
}

// CIFAR-10's training-set statistics (the small-image presets).
inline Normalization cifar_normalization() {
  return {{0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}};
}

// Statistics for `channels` (1 or 3) input channels: a grey image gets the mean
// of the colour statistics, since luma is a weighted average of the channels.
Normalization for_channels(const Normalization& rgb, int channels);

}  // namespace tlcore
