#!/usr/bin/env bash
# The CUDA checks on a GPU machine with pip's torch 2.x and no OpenCV package:
# builds tlcore there, runs tests/python/test_cuda.py and benchmarks/gpu.py.
# Needs, carried in .devcarry/: image_deps.tar.xz (scripts/bundle_image_deps.sh),
# fashion/ (Fashion-MNIST's t10k files) and flowers/ (a folder of class folders).
# Logs go to $OUT (default /tmp/tlcore-device). --tests-only skips the benchmark.
set -uo pipefail
out=${OUT:-/tmp/tlcore-device}
mkdir -p "$out"
deps=/tmp/tlcore-deps
mkdir -p "$deps" && tar -xJf .devcarry/image_deps.tar.xz -C "$deps" --strip-components=1
export LD_LIBRARY_PATH=$deps/lib:${LD_LIBRARY_PATH:-}
mkdir -p /usr/share/datasets/fashion-mnist && cp .devcarry/fashion/* /usr/share/datasets/fashion-mnist/
py=$(command -v python3)
start=$(date +%s)
cmake -S . -B /tmp/tlcore-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTLCORE_BUILD_TESTS=OFF \
  -DTLCORE_DEPS_ROOT="$deps" -DPython3_EXECUTABLE="$py" -Dpybind11_DIR="$($py -m pybind11 --cmakedir)" \
  -DTLCORE_PYTHON_OUT="$PWD/python/tlcore" -DCMAKE_DISABLE_FIND_PACKAGE_Protobuf=ON >"$out/cmake.log" 2>&1 || { tail -60 "$out/cmake.log"; exit 1; }
grep -E "WARNING|OpenCV from|Gloo|imgcodecs" -A2 "$out/cmake.log" | head -20
ninja -C /tmp/tlcore-build -k 0 _core >"$out/build.log" 2>&1 || {
  grep -E "error" -B2 -A6 "$out/build.log" | head -150; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
# Which libstdc++ the module uses: a private copy of its locale machinery crashed worker threads once.
so=$(ls -t python/tlcore/_core*.so | head -1)
echo "compiler: $(c++ --version | head -1)"
echo "link flags with 'static': $(ninja -C /tmp/tlcore-build -t commands _core | tail -1 | grep -o -- '-static[-a-z+]*' | sort -u | tr '\n' ' ')"
echo "libstdc++ code defined in _core: $(nm -C --defined-only "$so" | grep -cE ' (std::locale::|std::ios_base::|std::basic_ostream<char, std::char_traits<char> >::_M_insert)')"
echo "num_put id defined in _core: $(nm -C --defined-only "$so" | grep -E 'num_put<.*>::id' | head -3 | tr '\n' ';')"
ldd "$so" | grep -E "stdc|opencv|turbo" | sed 's/^/ldd: /'
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1
# Smoke checks first, each in its own process, so a crash names its step.
for step in "uint8_output=True" "uint8_output=True, pin_memory=True"; do
  timeout 60 "$py" -X faulthandler -c "import tlcore
d = tlcore.fashion_mnist(False)
x, y = next(iter(tlcore.DataLoader(d, 'cifar-eval', image_size=28, channels=1, $step)))
print('loader ($step):', x.dtype, tuple(x.shape), x.is_pinned())" 2>&1 | tail -5
done
timeout 60 "$py" -X faulthandler -c "import tlcore
x, y = next(iter(tlcore.ImageData('.devcarry/flowers', val_split=0).loader('train', for_gpu=True)))
print('JPEG loader:', x.dtype, tuple(x.shape), x.is_pinned())" 2>&1 | tail -5
# A crash in the loader's worker threads: a native backtrace says where, and the rest cannot run.
if ! timeout 60 "$py" -c "import tlcore; next(iter(tlcore.DataLoader(tlcore.fashion_mnist(False), 'cifar-eval', image_size=28, channels=1, uint8_output=True)))"; then
  timeout 120 cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" --args "$py" -c \
    "import tlcore; next(iter(tlcore.DataLoader(tlcore.fashion_mnist(False), 'cifar-eval', image_size=28, channels=1, uint8_output=True)))" \
    >"$out/gdb.log" 2>&1
  grep -E "^#|SIGSEGV|stdc\+\+|_core" "$out/gdb.log" | head -60
  exit 1
fi
timeout 300 "$py" -m pytest -q -rs tests/python/test_cuda.py 2>&1 | tee "$out/test_cuda.log" | tail -30
[[ "${1:-}" == --tests-only ]] && exit 0
timeout 300 "$py" benchmarks/gpu.py --data .devcarry/flowers 2>&1 | tee "$out/gpu.log" | tail -12
