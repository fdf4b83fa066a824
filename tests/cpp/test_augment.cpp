// Augmentation ops against independent oracles: OpenCV's own kernels,
// torchvision's arithmetic (values computed with torchvision 0.14) and slow,
// obviously-correct reference loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "tlcore/augment/ops.h"
#include "tlcore/augment/pipeline.h"
#include "tlcore/augment/rng.h"
#include "tlcore/error.h"

namespace tlcore {
namespace {

cv::Mat random_image(int height, int width, int channels, std::uint64_t seed = 1) {
  cv::Mat image(height, width, CV_8UC(channels));
  cv::RNG rng(seed);
  rng.fill(image, cv::RNG::UNIFORM, 0, 256);
  return image;
}

// A smooth image (sums of low-frequency sines): interpolation errors stay small.
cv::Mat smooth_image(int height, int width) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      auto& p = image.at<cv::Vec3b>(y, x);
      p[0] = cv::saturate_cast<std::uint8_t>(128 + 100 * std::sin(x * 0.05) * std::cos(y * 0.04));
      p[1] = cv::saturate_cast<std::uint8_t>(128 + 90 * std::cos(x * 0.03 + y * 0.02));
      p[2] = cv::saturate_cast<std::uint8_t>(x * 255.0 / width);
    }
  }
  return image;
}

double max_abs_diff(const cv::Mat& a, const cv::Mat& b) { return cv::norm(a, b, cv::NORM_INF); }

bool equal(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && max_abs_diff(a, b) == 0.0;
}

// ---- Rng ----

TEST(AugmentRng, SameTripleSameStreamDifferentIndexDifferentStream) {
  Rng a(7, 3, 11);
  Rng b(7, 3, 11);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.engine()(), b.engine()());
  std::set<std::uint64_t> firsts;
  for (std::uint64_t index = 0; index < 1000; ++index) firsts.insert(Rng(7, 3, index).engine()());
  EXPECT_EQ(firsts.size(), 1000u);
  EXPECT_NE(Rng(7, 3, 11).engine()(), Rng(7, 4, 11).engine()());
  EXPECT_NE(Rng(7, 3, 11).engine()(), Rng(8, 3, 11).engine()());
}

TEST(AugmentRng, RangesAndMoments) {
  Rng rng(1);
  constexpr int kDraws = 60000;
  double sum = 0.0;
  std::vector<int> counts(6, 0);
  int heads = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double u = rng.uniform(-2.0, 3.0);
    ASSERT_GE(u, -2.0);
    ASSERT_LT(u, 3.0);
    sum += u;
    const std::int64_t k = rng.integer(10, 15);
    ASSERT_GE(k, 10);
    ASSERT_LE(k, 15);
    ++counts[static_cast<std::size_t>(k - 10)];
    heads += rng.bernoulli(0.25) ? 1 : 0;
  }
  EXPECT_NEAR(sum / kDraws, 0.5, 0.03);  // 3.5 standard errors
  for (const int c : counts) EXPECT_NEAR(c, kDraws / 6.0, 400.0);
  EXPECT_NEAR(heads / static_cast<double>(kDraws), 0.25, 0.01);
  EXPECT_FALSE(rng.bernoulli(0.0));
  EXPECT_TRUE(rng.bernoulli(1.0));
  EXPECT_EQ(rng.integer(4, 4), 4);
  EXPECT_EQ(rng.uniform(2.0, 2.0), 2.0);
  EXPECT_THROW(rng.integer(5, 4), InvalidArgument);
}

// ---- Flip ----

TEST(AugmentFlip, MatchesCvFlip) {
  for (const int channels : {1, 3}) {
    const cv::Mat image = random_image(17, 30, channels);
    cv::Mat expected;
    cv::flip(image, expected, 1);
    Rng rng(0);
    EXPECT_TRUE(equal(RandomHorizontalFlip(1.0).apply(image, rng), expected));
    EXPECT_TRUE(equal(hflip(image), expected));
    EXPECT_TRUE(equal(RandomHorizontalFlip(0.0).apply(image, rng), image));
  }
  EXPECT_THROW(RandomHorizontalFlip(1.5), InvalidArgument);
}

TEST(AugmentFlip, SampleAndApplyReplayTheOp) {
  const RandomHorizontalFlip flip(0.5);
  const cv::Mat image = random_image(8, 9, 3);
  int flipped = 0;
  for (std::uint64_t index = 0; index < 200; ++index) {
    Rng draw(3, 0, index);
    Rng run(3, 0, index);
    const bool f = flip.sample(draw);
    flipped += f ? 1 : 0;
    EXPECT_TRUE(equal(flip.apply(image, run), flip.apply(image, f)));
  }
  EXPECT_GT(flipped, 70);
  EXPECT_LT(flipped, 130);
}

// ---- Resize ----

TEST(AugmentResize, ShorterSideFollowsTorchvision) {
  // torchvision.transforms.functional._compute_resized_output_size(..., [256]).
  struct Case {
    int height, width, new_height, new_width;
  };
  for (const Case& c :
       {Case{375, 500, 256, 341}, Case{500, 375, 341, 256}, Case{3, 1000, 256, 85333},
        Case{256, 256, 256, 256}, Case{333, 777, 256, 597}, Case{1000, 999, 256, 256}}) {
    const cv::Size size = resized_shorter_size(cv::Size(c.width, c.height), 256);
    EXPECT_EQ(size.height, c.new_height) << c.height << "x" << c.width;
    EXPECT_EQ(size.width, c.new_width) << c.height << "x" << c.width;
  }
}

// PIL's bilinear resampling as a formula: output pixel i averages inputs x with
// weights triangle((x + 0.5 - centre) / max(scale, 1)), centre = (i + 0.5) * scale,
// normalised; separable, in double precision, rounded once.
cv::Mat reference_antialias(const cv::Mat& image, int height, int width) {
  const auto weights = [](int in, int out) {
    const double scale = static_cast<double>(in) / out;
    const double stretch = std::max(scale, 1.0);
    cv::Mat w = cv::Mat::zeros(out, in, CV_64F);
    for (int i = 0; i < out; ++i) {
      const double centre = (i + 0.5) * scale;
      for (int x = 0; x < in; ++x) {
        w.at<double>(i, x) = std::max(0.0, 1.0 - std::abs((x + 0.5 - centre) / stretch));
      }
      w.row(i) /= cv::sum(w.row(i))[0];
    }
    return w;
  };
  const cv::Mat wy = weights(image.rows, height);
  const cv::Mat wx = weights(image.cols, width);
  std::vector<cv::Mat> planes;
  cv::split(image, planes);
  for (cv::Mat& plane : planes) {
    cv::Mat values;
    plane.convertTo(values, CV_64F);
    cv::Mat resized = wy * values * wx.t();
    resized.convertTo(plane, CV_8U);
  }
  cv::Mat out;
  cv::merge(planes, out);
  return out;
}

TEST(AugmentResize, ShrinkingIsPilsAntialiasedBilinear) {
  for (const int channels : {1, 3}) {
    const cv::Mat image = random_image(61, 83, channels);
    for (const cv::Size size :
         {cv::Size(31, 23), cv::Size(83, 20), cv::Size(40, 61), cv::Size(9, 70), cv::Size(1, 1)}) {
      const cv::Mat out = resize_image(image, size.height, size.width);
      ASSERT_EQ(out.size(), size);
      ASSERT_EQ(out.type(), image.type());
      // Pillow rounds after each pass: one grey level from the exact value.
      EXPECT_LE(max_abs_diff(out, reference_antialias(image, size.height, size.width)), 1.0)
          << size;
    }
  }
  // A flat image stays flat: the weights sum to one.
  const cv::Mat flat(50, 70, CV_8UC3, cv::Scalar(10, 128, 250));
  EXPECT_EQ(
      max_abs_diff(resize_image(flat, 13, 17), cv::Mat(13, 17, CV_8UC3, flat.at<cv::Vec3b>(0, 0))),
      0.0);
}

TEST(AugmentResize, GrowingIsBilinearAndShorterSideSizes) {
  const cv::Mat small = random_image(30, 40, 3);
  cv::Mat linear;
  cv::resize(small, linear, cv::Size(80, 60), 0, 0, cv::INTER_LINEAR);
  EXPECT_TRUE(equal(Resize(60, 80).apply(small), linear));
  EXPECT_LE(max_abs_diff(Resize(60, 80).apply(small), reference_antialias(small, 60, 80)), 1.0);
  EXPECT_TRUE(equal(Resize(30).apply(small), small));
  EXPECT_EQ(Resize(128).apply(random_image(300, 400, 1)).size(), cv::Size(170, 128));
  EXPECT_THROW(Resize(0), InvalidArgument);
  EXPECT_THROW(Resize(10, -1), InvalidArgument);
}

// ---- CenterCrop ----

TEST(AugmentCenterCrop, GeometryFollowsTorchvision) {
  // (top, left) of torchvision.transforms.functional.center_crop located on an index image;
  // negative values are its zero padding.
  struct Case {
    int height, width, crop_height, crop_width, top, left;
  };
  for (const Case& c :
       {Case{5, 5, 2, 2, 2, 2}, Case{7, 7, 2, 2, 2, 2}, Case{6, 6, 3, 3, 2, 2},
        Case{4, 4, 4, 4, 0, 0}, Case{3, 3, 6, 6, -1, -1}, Case{10, 3, 4, 6, 3, -1},
        Case{3, 10, 6, 4, -1, 3}, Case{224, 299, 224, 224, 0, 38}, Case{257, 256, 224, 224, 16, 16},
        Case{5, 8, 8, 3, -1, 2}, Case{2, 2, 5, 5, -1, -1}}) {
    const CropBox box = center_crop_box(c.height, c.width, c.crop_height, c.crop_width);
    EXPECT_EQ(box.top, c.top) << c.height << "x" << c.width << " -> " << c.crop_height << "x"
                              << c.crop_width;
    EXPECT_EQ(box.left, c.left) << c.height << "x" << c.width << " -> " << c.crop_height << "x"
                                << c.crop_width;
    EXPECT_EQ(box.height, c.crop_height);
    EXPECT_EQ(box.width, c.crop_width);
  }
}

TEST(AugmentCenterCrop, PixelsAndZeroPadding) {
  const cv::Mat image = random_image(10, 3, 3);
  const cv::Mat out = CenterCrop(4, 6).apply(image);
  ASSERT_EQ(out.rows, 4);
  ASSERT_EQ(out.cols, 6);
  // Rows 3..6 of the image land in columns 1..3; columns 0, 4, 5 are padding.
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 6; ++x) {
      const cv::Vec3b expected =
          (x >= 1 && x <= 3) ? image.at<cv::Vec3b>(y + 3, x - 1) : cv::Vec3b(0, 0, 0);
      EXPECT_EQ(out.at<cv::Vec3b>(y, x), expected) << y << "," << x;
    }
  }
  const cv::Mat big = random_image(257, 256, 1);
  EXPECT_TRUE(equal(CenterCrop(224).apply(big), big(cv::Rect(16, 16, 224, 224))));
}

// ---- RandomResizedCrop ----

TEST(AugmentRandomResizedCrop, BoxesInBoundsAndWithinScaleAndRatio) {
  const std::array<double, 2> scale{0.08, 1.0};
  const std::array<double, 2> ratio{3.0 / 4.0, 4.0 / 3.0};
  const RandomResizedCrop op(224, scale, ratio);
  for (const cv::Size size : {cv::Size(500, 375), cv::Size(375, 500), cv::Size(224, 224),
                              cv::Size(50, 37), cv::Size(1000, 300)}) {
    int fallbacks = 0;
    const double area = static_cast<double>(size.width) * size.height;
    for (std::uint64_t index = 0; index < 3000; ++index) {
      Rng rng(5, 1, index);
      const ResizedCropParams p = op.sample(size, rng);
      const CropBox& b = p.box;
      ASSERT_GE(b.top, 0);
      ASSERT_GE(b.left, 0);
      ASSERT_GT(b.height, 0);
      ASSERT_GT(b.width, 0);
      ASSERT_LE(b.top + b.height, size.height);
      ASSERT_LE(b.left + b.width, size.width);
      if (p.fallback) {
        ++fallbacks;
        // Wider than 4/3: the full height, 4/3 as wide, centred.
        EXPECT_EQ(b.height, 300);
        EXPECT_EQ(b.width, 400);
        EXPECT_EQ(b.left, 300);
        continue;
      }
      // w and h are each rounded from the exact values: allow half a pixel each way.
      const double w = b.width;
      const double h = b.height;
      EXPECT_GE((w + 0.5) * (h + 0.5), scale[0] * area);
      EXPECT_LE((w - 0.5) * (h - 0.5), scale[1] * area);
      EXPECT_GE((w + 0.5) / (h - 0.5), ratio[0]);
      EXPECT_LE((w - 0.5) / (h + 0.5), ratio[1]);
    }
    // Simulating torchvision's get_params: one attempt fails with probability 0.75
    // on 1000x300, so all ten fail in 5.9% of draws; on the other sizes in < 2e-6.
    if (size.width == 1000) {
      EXPECT_GT(fallbacks, 120);
      EXPECT_LT(fallbacks, 240);
    } else {
      EXPECT_EQ(fallbacks, 0);
    }
  }
}

TEST(AugmentRandomResizedCrop, CentralFallbackFollowsTorchvision) {
  const RandomResizedCrop op(32);
  Rng rng(0);
  // No box of area >= 8% with ratio <= 4/3 fits 10 rows of 1000: torchvision
  // falls back to h = 10, w = round(10 * 4/3) = 13, centred.
  ResizedCropParams p = op.sample(cv::Size(1000, 10), rng);
  EXPECT_TRUE(p.fallback);
  EXPECT_EQ(p.box.top, 0);
  EXPECT_EQ(p.box.left, 493);
  EXPECT_EQ(p.box.height, 10);
  EXPECT_EQ(p.box.width, 13);
  p = op.sample(cv::Size(10, 1000), rng);
  EXPECT_TRUE(p.fallback);
  EXPECT_EQ(p.box.top, 493);
  EXPECT_EQ(p.box.left, 0);
  EXPECT_EQ(p.box.height, 13);
  EXPECT_EQ(p.box.width, 10);
}

TEST(AugmentRandomResizedCrop, OutputSizeExactAndApplyIsResizeOfBox) {
  const RandomResizedCrop op(64, 48);
  const cv::Mat image = random_image(120, 90, 3);
  for (std::uint64_t index = 0; index < 50; ++index) {
    Rng draw(9, 0, index);
    Rng run(9, 0, index);
    const ResizedCropParams p = op.sample(image.size(), draw);
    const cv::Mat out = op.apply(image, run);
    ASSERT_EQ(out.rows, 64);
    ASSERT_EQ(out.cols, 48);
    const cv::Mat box = image(cv::Rect(p.box.left, p.box.top, p.box.width, p.box.height));
    EXPECT_TRUE(equal(out, resize_image(box.clone(), 64, 48)));
  }
  EXPECT_THROW(RandomResizedCrop(224, {0.0, 1.0}), InvalidArgument);
  EXPECT_THROW(RandomResizedCrop(224, {0.5, 0.2}), InvalidArgument);
  EXPECT_THROW(RandomResizedCrop(224, {0.08, 1.0}, {2.0, 1.0}), InvalidArgument);
}

// ---- PadRandomCrop ----

TEST(AugmentPadRandomCrop, OffsetsCoverThePaddedRangeAndPixelsMatchCopyMakeBorder) {
  const cv::Mat image = random_image(32, 32, 3);
  for (const PadMode mode : {PadMode::kZero, PadMode::kReflect}) {
    const PadRandomCrop op(32, 4, mode);
    cv::Mat padded;
    cv::copyMakeBorder(image, padded, 4, 4, 4, 4,
                       mode == PadMode::kZero ? cv::BORDER_CONSTANT : cv::BORDER_REFLECT_101,
                       cv::Scalar::all(0));
    std::set<int> tops;
    std::set<int> lefts;
    for (std::uint64_t index = 0; index < 400; ++index) {
      Rng draw(2, 0, index);
      Rng run(2, 0, index);
      const CropBox b = op.sample(image.size(), draw);
      tops.insert(b.top);
      lefts.insert(b.left);
      const cv::Mat out = op.apply(image, run);
      ASSERT_TRUE(equal(out, padded(cv::Rect(b.left + 4, b.top + 4, 32, 32))));
    }
    EXPECT_EQ(tops.size(), 9u);
    EXPECT_EQ(*tops.begin(), -4);
    EXPECT_EQ(*tops.rbegin(), 4);
    EXPECT_EQ(lefts.size(), 9u);
  }
  Rng rng(0);
  EXPECT_THROW(PadRandomCrop(32, 4).apply(random_image(20, 20, 3), rng), InvalidArgument);
  EXPECT_THROW(PadRandomCrop(8, 4, PadMode::kReflect).apply(random_image(3, 8, 3), rng),
               InvalidArgument);
}

// ---- Rotation and zoom ----

TEST(AugmentRotation, NinetyDegreesEqualsCvRotate) {
  const cv::Mat image = random_image(41, 41, 3);
  Rng rng(0);
  const cv::Mat out = RandomRotation(90.0, 90.0).apply(image, rng);
  cv::Mat expected;
  cv::rotate(image, expected, cv::ROTATE_90_COUNTERCLOCKWISE);  // positive = counter-clockwise
  const cv::Rect interior(1, 1, 39, 39);
  EXPECT_LE(max_abs_diff(out(interior), expected(interior)), 1.0);
  EXPECT_TRUE(equal(rotate(image, 0.0), image));
  // Even sides: the centre lies between pixels and the quarter turn still maps the grid onto
  // itself.
  const cv::Mat even = random_image(40, 40, 1);
  cv::rotate(even, expected, cv::ROTATE_90_COUNTERCLOCKWISE);
  EXPECT_LE(
      max_abs_diff(rotate(even, 90.0)(cv::Rect(1, 1, 38, 38)), expected(cv::Rect(1, 1, 38, 38))),
      1.0);
}

TEST(AugmentRotation, AnglesStayInRangeAndCornersFillWithZeros) {
  const RandomRotation op(30.0);
  for (std::uint64_t index = 0; index < 500; ++index) {
    Rng rng(1, 0, index);
    const double angle = op.sample(rng);
    ASSERT_GE(angle, -30.0);
    ASSERT_LT(angle, 30.0);
  }
  const cv::Mat white(50, 50, CV_8UC3, cv::Scalar::all(255));
  const cv::Mat out = rotate(white, 45.0);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 0));
  EXPECT_EQ(out.at<cv::Vec3b>(25, 25), cv::Vec3b(255, 255, 255));
  EXPECT_THROW(RandomRotation(10.0, -10.0), InvalidArgument);
}

TEST(AugmentZoom, HalfFactorEqualsBilinearUpscaleOfTheCentre) {
  // zoom(0.5) reads input (x - c) / 2 + c with c = (2n - 1) / 2: the same sample
  // points as cv::resize(INTER_LINEAR) doubling the central n x n crop.
  const cv::Mat image = smooth_image(64, 64);
  const cv::Mat out = zoom(image, 0.5);
  cv::Mat expected;
  cv::resize(image(cv::Rect(16, 16, 32, 32)), expected, cv::Size(64, 64), 0, 0, cv::INTER_LINEAR);
  EXPECT_LE(max_abs_diff(out(cv::Rect(2, 2, 60, 60)), expected(cv::Rect(2, 2, 60, 60))), 1.0);
  EXPECT_TRUE(equal(zoom(image, 1.0), image));
  // Zooming out leaves a zero frame.
  const cv::Mat white(40, 40, CV_8UC1, cv::Scalar::all(255));
  const cv::Mat out_zoom = zoom(white, 2.0);
  EXPECT_EQ(out_zoom.at<std::uint8_t>(0, 0), 0);
  EXPECT_EQ(out_zoom.at<std::uint8_t>(20, 20), 255);
  const RandomZoom op(0.1);
  for (std::uint64_t index = 0; index < 500; ++index) {
    Rng rng(1, 0, index);
    const double f = op.sample(rng);
    ASSERT_GE(f, 0.9);
    ASSERT_LT(f, 1.1);
  }
  EXPECT_THROW(RandomZoom(1.0), InvalidArgument);
}

// ---- Colour ----

TEST(AugmentColor, JitterFactorOneIsIdentityAndBrightnessZeroIsBlack) {
  const cv::Mat image = random_image(20, 30, 3);
  EXPECT_TRUE(equal(ColorJitter(0.4, 0.4, 0.4).apply(image, JitterParams{}), image));
  Rng rng(0);
  EXPECT_TRUE(equal(ColorJitter().apply(image, rng), image));
  EXPECT_EQ(cv::countNonZero(adjust_brightness(image, 0.0).reshape(1)), 0);
  EXPECT_TRUE(equal(adjust_brightness(image, 1.0), image));
  EXPECT_TRUE(equal(adjust_contrast(image, 1.0), image));
  EXPECT_TRUE(equal(adjust_saturation(image, 1.0), image));
}

TEST(AugmentColor, BlendsMatchReferenceLoops) {
  const cv::Mat image = random_image(16, 24, 3);
  cv::Mat bright;
  image.convertTo(bright, -1, 1.5, 0.0);  // saturating, rounding halves to even
  EXPECT_TRUE(equal(adjust_brightness(image, 1.5), bright));

  // Contrast blends with the mean grey level, saturation with the grey image.
  cv::Mat gray;
  cv::cvtColor(image, gray, cv::COLOR_RGB2GRAY);
  const double mean = cv::mean(gray)[0];
  const cv::Mat contrast = adjust_contrast(image, 0.6);
  const cv::Mat saturation = adjust_saturation(image, 0.3);
  for (int y = 0; y < image.rows; ++y) {
    for (int x = 0; x < image.cols; ++x) {
      const cv::Vec3b p = image.at<cv::Vec3b>(y, x);
      const double g = gray.at<std::uint8_t>(y, x);
      for (int c = 0; c < 3; ++c) {
        const double want_contrast = std::clamp(0.6 * p[c] + 0.4 * mean, 0.0, 255.0);
        const double want_saturation = std::clamp(0.3 * p[c] + 0.7 * g, 0.0, 255.0);
        // OpenCV's grey and PIL's grey may differ by one level, plus output rounding.
        EXPECT_NEAR(contrast.at<cv::Vec3b>(y, x)[c], want_contrast, 1.0);
        EXPECT_NEAR(saturation.at<cv::Vec3b>(y, x)[c], want_saturation, 1.5);
      }
    }
  }
  const cv::Mat flat = adjust_contrast(image, 0.0);
  EXPECT_EQ(max_abs_diff(flat, cv::Mat(image.size(), image.type(), flat.at<cv::Vec3b>(0, 0))), 0.0);
  EXPECT_NEAR(flat.at<cv::Vec3b>(0, 0)[0], mean, 1.0);
}

TEST(AugmentColor, JitterDrawsWithinBoundsAndReplays) {
  const ColorJitter op(0.4, 1.5, 0.2);
  const cv::Mat image = random_image(10, 10, 3);
  for (std::uint64_t index = 0; index < 500; ++index) {
    Rng draw(4, 0, index);
    Rng run(4, 0, index);
    const JitterParams p = op.sample(draw);
    ASSERT_GE(p.brightness, 0.6);
    ASSERT_LT(p.brightness, 1.4);
    ASSERT_GE(p.contrast, 0.0);
    ASSERT_LT(p.contrast, 2.5);
    ASSERT_GE(p.saturation, 0.8);
    ASSERT_LT(p.saturation, 1.2);
    if (index < 20) {
      ASSERT_TRUE(equal(op.apply(image, run), op.apply(image, p)));
    }
  }
  EXPECT_THROW(ColorJitter(-0.1), InvalidArgument);
}

TEST(AugmentColor, GrayscaleIsLumaReplicated) {
  const cv::Mat image = random_image(13, 17, 3);
  const cv::Mat out = Grayscale3().apply(image);
  ASSERT_EQ(out.channels(), 3);
  cv::Mat expected;
  cv::cvtColor(image, expected, cv::COLOR_RGB2GRAY);  // same ITU-R 601 weights, other rounding
  std::vector<cv::Mat> planes;
  cv::split(out, planes);
  EXPECT_LE(max_abs_diff(planes[0], expected), 1.0);
  EXPECT_TRUE(equal(planes[0], planes[1]));
  EXPECT_TRUE(equal(planes[0], planes[2]));
  // Pure colours: PIL's 16-bit weights are 19595, 38470, 7471 (/ 65536).
  const cv::Mat red(1, 1, CV_8UC3, cv::Scalar(255, 0, 0));
  const cv::Mat green(1, 1, CV_8UC3, cv::Scalar(0, 255, 0));
  const cv::Mat blue(1, 1, CV_8UC3, cv::Scalar(0, 0, 255));
  EXPECT_EQ(grayscale(red, 1).at<std::uint8_t>(0, 0), 76);
  EXPECT_EQ(grayscale(green, 1).at<std::uint8_t>(0, 0), 150);
  EXPECT_EQ(grayscale(blue, 1).at<std::uint8_t>(0, 0), 29);
  const cv::Mat one = random_image(5, 6, 1);
  EXPECT_TRUE(equal(grayscale(one, 1), one));
  Rng rng(0);
  EXPECT_TRUE(equal(RandomGrayscale(1.0).apply(image, rng), out));
  EXPECT_TRUE(equal(RandomGrayscale(0.0).apply(image, rng), image));
}

// ---- Pipeline ----

Pipeline small_pipeline(int channels) {
  std::vector<float> mean =
      channels == 3 ? std::vector<float>{0.485f, 0.456f, 0.406f} : std::vector<float>{0.449f};
  std::vector<float> std =
      channels == 3 ? std::vector<float>{0.229f, 0.224f, 0.225f} : std::vector<float>{0.226f};
  return Pipeline({}, 7, 9, mean, std, channels);
}

TEST(AugmentPipeline, NormalizeIntoMatchesReferenceLoop) {
  for (const int channels : {1, 3}) {
    const Pipeline pipeline = small_pipeline(channels);
    // A view into a larger image: rows are not contiguous.
    const cv::Mat big = random_image(20, 30, channels, 3 + channels);
    const cv::Mat image = big(cv::Rect(5, 4, 9, 7));
    std::vector<float> out(static_cast<std::size_t>(channels) * 7 * 9, -1000.0f);
    pipeline.normalize_into(image, out.data());
    std::vector<std::uint8_t> bytes(out.size(), 0);
    pipeline.copy_into(image, bytes.data());
    for (int c = 0; c < channels; ++c) {
      for (int y = 0; y < 7; ++y) {
        for (int x = 0; x < 9; ++x) {
          const std::uint8_t v = image.ptr<std::uint8_t>(y)[x * channels + c];
          const double want = (v / 255.0 - pipeline.mean()[c]) / pipeline.std()[c];
          const std::size_t at = (static_cast<std::size_t>(c) * 7 + y) * 9 + x;
          EXPECT_NEAR(out[at], want, 1e-5);
          EXPECT_EQ(bytes[at], v);
        }
      }
    }
  }
  const Pipeline pipeline = small_pipeline(3);
  std::vector<float> out(3 * 7 * 9);
  EXPECT_THROW(pipeline.normalize_into(random_image(7, 8, 3), out.data()), InvalidArgument);
  EXPECT_THROW(pipeline.normalize_into(random_image(7, 9, 1), out.data()), InvalidArgument);
}

TEST(AugmentPipeline, ConstructorValidates) {
  const std::vector<float> m3{0.5f, 0.5f, 0.5f};
  EXPECT_THROW(Pipeline({}, 8, 8, m3, m3, 2), InvalidArgument);
  EXPECT_THROW(Pipeline({}, 8, 8, {0.5f}, m3, 3), InvalidArgument);
  EXPECT_THROW(Pipeline({}, 8, 8, m3, {0.5f, 0.0f, 0.5f}, 3), InvalidArgument);
  EXPECT_THROW(Pipeline({}, 8, 8, m3, {0.5f, -1.0f, 0.5f}, 3), InvalidArgument);
  EXPECT_THROW(Pipeline({}, 0, 8, m3, m3, 3), InvalidArgument);
  EXPECT_THROW(Pipeline({nullptr}, 8, 8, m3, m3, 3), InvalidArgument);
  EXPECT_NO_THROW(Pipeline({}, 8, 8, {0.5f}, {0.5f}, 1));
}

TEST(AugmentPipeline, AugmentRejectsAWrongOutputShapeNamingThePipeline) {
  const Pipeline pipeline({std::make_shared<Resize>(32)}, 32, 32, {0.5f, 0.5f, 0.5f},
                          {0.5f, 0.5f, 0.5f});
  Rng rng(0);
  EXPECT_EQ(pipeline.augment(random_image(64, 64, 3), rng).size(), cv::Size(32, 32));
  try {
    pipeline.augment(random_image(64, 96, 3), rng);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("Pipeline([Resize(32)]"), std::string::npos) << message;
    EXPECT_NE(message.find("32x48x3"), std::string::npos) << message;
  }
  EXPECT_THROW(pipeline.augment(random_image(64, 64, 1), rng), InvalidArgument);
  EXPECT_THROW(pipeline.augment(cv::Mat(), rng), InvalidArgument);
  EXPECT_THROW(pipeline.augment(cv::Mat(8, 8, CV_32FC3), rng), InvalidArgument);
}

TEST(AugmentPipeline, SameSeedTripleSameOutputOtherIndexOtherOutput) {
  const Pipeline pipeline = Pipeline::preset("imagenet-train", 64);
  const cv::Mat image = smooth_image(120, 160);
  Rng a(42, 1, 7);
  Rng b(42, 1, 7);
  EXPECT_TRUE(equal(pipeline.augment(image, a), pipeline.augment(image, b)));
  int differ = 0;
  for (std::uint64_t index = 0; index < 20; ++index) {
    Rng first(42, 1, index);
    Rng second(42, 1, index + 100);
    differ += equal(pipeline.augment(image, first), pipeline.augment(image, second)) ? 0 : 1;
  }
  EXPECT_EQ(differ, 20);
}

TEST(AugmentPipeline, PresetsHaveTheirSizesStatisticsAndBounds) {
  const cv::Mat photo = smooth_image(375, 500);
  const cv::Mat tiny = smooth_image(32, 32);
  for (const char* name : {"imagenet-train", "imagenet-eval", "cifar-train", "cifar-eval"}) {
    for (const int channels : {1, 3}) {
      const Pipeline pipeline = Pipeline::preset(name, 32, channels);
      EXPECT_EQ(pipeline.out_height(), 32);
      EXPECT_EQ(pipeline.out_width(), 32);
      EXPECT_EQ(pipeline.channels(), channels);
      ASSERT_EQ(pipeline.mean().size(), static_cast<std::size_t>(channels));
      cv::Mat input = std::string(name).rfind("cifar", 0) == 0 ? tiny : photo;
      if (channels == 1) input = grayscale(input, 1);
      for (std::uint64_t index = 0; index < 10; ++index) {
        Rng rng(0, 0, index);
        const cv::Mat out = pipeline.augment(input, rng);
        EXPECT_EQ(out.size(), cv::Size(32, 32)) << name;
        EXPECT_EQ(out.channels(), channels) << name;
      }
    }
  }
  const Pipeline imagenet = Pipeline::preset("imagenet-eval", 224);
  EXPECT_EQ(imagenet.mean(), (std::vector<float>{0.485f, 0.456f, 0.406f}));
  EXPECT_EQ(imagenet.std(), (std::vector<float>{0.229f, 0.224f, 0.225f}));
  EXPECT_EQ(imagenet.repr(),
            "Pipeline([Resize(256), CenterCrop((224, 224))], size=(224, 224), mean=(0.485, 0.456, "
            "0.406), std=(0.229, 0.224, 0.225), channels=3)");
  EXPECT_NEAR(Pipeline::preset("imagenet-eval", 224, 1).mean()[0], 0.449f, 1e-6);
  const Pipeline cifar = Pipeline::preset("cifar-train", 64);
  EXPECT_EQ(cifar.std(), (std::vector<float>{0.2470f, 0.2435f, 0.2616f}));
  EXPECT_EQ(cifar.ops().size(), 3u);  // Resize((64, 64)), PadRandomCrop(padding 8), flip
  EXPECT_EQ(cifar.ops()[1]->repr(), "PadRandomCrop(size=(64, 64), padding=8, mode='zero')");

  // Reduced-decode bounds, with Pillow's reducing gap of 2: Resize(256) needs 512;
  // a crop alone needs full resolution; RandomResizedCrop's smallest box is
  // sqrt(0.08 * 3/4) of the image side.
  EXPECT_EQ(imagenet.decode_options().min_side, 512);
  EXPECT_EQ(imagenet.decode_options().channels, 3);
  EXPECT_EQ(Pipeline::preset("imagenet-train", 224).decode_options().min_side,
            static_cast<int>(std::ceil(2 * 224 / std::sqrt(0.08 * 0.75))));
  EXPECT_EQ(Pipeline::preset("cifar-eval", 32, 1).decode_options().min_side, 0);
  EXPECT_EQ(Pipeline::preset("cifar-eval", 32, 1).decode_options().channels, 1);
  EXPECT_EQ(Pipeline::preset("cifar-train", 64).decode_options().min_side, 128);
  EXPECT_EQ(Pipeline({std::make_shared<CenterCrop>(8)}, 8, 8, {0.5f}, {0.5f}, 1)
                .decode_options()
                .min_side,
            0);
}

TEST(AugmentPipeline, UnknownPresetListsTheKnownOnes) {
  try {
    Pipeline::preset("imagenet", 224);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    for (const char* name :
         {"\"imagenet\"", "imagenet-train", "imagenet-eval", "cifar-train", "cifar-eval"}) {
      EXPECT_NE(message.find(name), std::string::npos) << message;
    }
  }
  EXPECT_THROW(Pipeline::preset("cifar-eval", 0), InvalidArgument);
  EXPECT_THROW(Pipeline::preset("cifar-eval", 32, 2), InvalidArgument);
}

}  // namespace
}  // namespace tlcore
