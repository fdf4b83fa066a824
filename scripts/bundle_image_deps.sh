#!/usr/bin/env bash
# Packs Debian's OpenCV (core, imgproc), TurboJPEG, nlohmann-json (headers and
# its CMake package) and the libraries they load
# into one archive, for building tlcore where no OpenCV package exists (e.g. a
# CUDA machine with pip's torch). Unpack it anywhere and configure with
# -DTLCORE_DEPS_ROOT=<that folder>; put <that folder>/lib on LD_LIBRARY_PATH.
# PNG/BMP/WEBP decoding (OpenCV imgcodecs) is left out: it drags in GDAL.
#
# Usage: scripts/bundle_image_deps.sh OUT.tar.xz
set -euo pipefail
out=$(realpath -m "$1")
multiarch=/usr/lib/x86_64-linux-gnu
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/deps/include/opencv4/opencv2" "$stage/deps/lib"
cp -r /usr/include/opencv4/opencv2/core /usr/include/opencv4/opencv2/imgproc \
  /usr/include/opencv4/opencv2/core.hpp /usr/include/opencv4/opencv2/imgproc.hpp \
  /usr/include/opencv4/opencv2/opencv_modules.hpp "$stage/deps/include/opencv4/opencv2/"
cp /usr/include/turbojpeg.h "$stage/deps/include/"
cp -r /usr/include/nlohmann "$stage/deps/include/"
mkdir -p "$stage/deps/share/cmake"
cp -r /usr/share/cmake/nlohmann_json "$stage/deps/share/cmake/"
for lib in libopencv_core.so.406 libopencv_imgproc.so.406 libturbojpeg.so.0 \
           libtbb.so.12 libGLX.so.0 libGLdispatch.so.0; do
  cp -L "$multiarch/$lib" "$stage/deps/lib/"
done
# Unversioned names for the linker.
ln -s libopencv_core.so.406 "$stage/deps/lib/libopencv_core.so"
ln -s libopencv_imgproc.so.406 "$stage/deps/lib/libopencv_imgproc.so"
ln -s libturbojpeg.so.0 "$stage/deps/lib/libturbojpeg.so"
tar -C "$stage" -cJf "$out" deps
echo "$out: $(du -h "$out" | cut -f1)"
