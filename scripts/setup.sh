#!/usr/bin/env bash
# Brings a fresh Debian machine to a working tlcore: apt packages, a venv that
# sees Debian's Python packages, the CMake build (C++ core, module, tests) and an
# editable install with the `tlcore` command. Idempotent: a second run only
# checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ccache pkg-config git
  libtorch-dev python3-torch python3-torchvision libopenblas0-pthread
  libopencv-dev libturbojpeg0-dev libarchive-dev libwebp-dev zlib1g-dev libgloo-dev nlohmann-json3-dev
  libprotobuf-dev protobuf-compiler
  pybind11-dev python3-pybind11 python3-dev python3-venv python3-pip python3-setuptools python3-wheel
  clang libclang-rt-dev
  libgtest-dev python3-pytest python3-numpy python3-pil python3-tqdm python3-matplotlib python3-sklearn
  python3-fastapi python3-uvicorn python3-multipart python3-httpx python3-prometheus-client
  chromium chromium-driver python3-selenium python3-opencv python3-flasgger
  python3-nbclient python3-ipykernel python3-nbformat python3-yaml
  dataset-fashion-mnist
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi

export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# ccache rewrites paths under this folder as relative ones, so another checkout of the
# same sources beside or inside this one (a worktree, test_install's clean clone) reuses
# these objects instead of compiling torch for half an hour.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$PWD")}"
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PWD/.venv/bin/python"
fi
cmake --build build
# The sanitizer build: the torch-free core and its tests under ASan+UBSan, and the
# libFuzzer harnesses of every parser of untrusted bytes (scripts/fuzz.sh).
if [ ! -f build-sanitize/CMakeCache.txt ]; then
  cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DTLCORE_SANITIZE=ON -DTLCORE_BUILD_PYTHON=OFF -DTLCORE_BUILD_TESTS=OFF \
    -DPython3_EXECUTABLE="$PWD/.venv/bin/python"
fi
cmake --build build-sanitize --target fuzzers tlcore_image_tests
# The editable install imports the module from the source tree. Copy then rename:
# a process still running the old module must not see it change under it.
for so in build/python/tlcore/_core.*.so; do
  dest="python/tlcore/$(basename "$so")"
  if [ ! -f "$dest" ] || [ "$so" -nt "$dest" ]; then
    cp "$so" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
  fi
done

if ! .venv/bin/python -c "import tlcore" >/dev/null 2>&1 || [ ! -x .venv/bin/tlcore ]; then
  echo "setup: pip install -e ."
  .venv/bin/pip install -q --no-build-isolation --no-deps --no-index -e .
fi
echo "setup: ready (.venv/bin/tlcore, build/tlcore_tests, build-sanitize/)"
