#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "op_util.h"
#include "tlcore/augment/ops.h"

namespace tlcore {

cv::Mat hflip(const cv::Mat& image) {
  check_image(image, "hflip");
  cv::Mat out;
  cv::flip(image, out, 1);
  return out;
}

RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  augment_detail::require_probability("RandomHorizontalFlip", p);
}

bool RandomHorizontalFlip::sample(Rng& rng) const { return rng.bernoulli(p_); }

cv::Mat RandomHorizontalFlip::apply(const cv::Mat& image, bool flip) const {
  check_image(image, [this] { return repr(); });
  return flip ? hflip(image) : image.clone();
}

cv::Mat RandomHorizontalFlip::apply(const cv::Mat& image, Rng& rng) const {
  return apply(image, sample(rng));
}

std::string RandomHorizontalFlip::repr() const {
  return "RandomHorizontalFlip(p=" + augment_detail::format_number(p_) + ")";
}

nlohmann::json RandomHorizontalFlip::to_json() const {
  return {{"op", "random_horizontal_flip"}, {"p", p_}};
}

}  // namespace tlcore
