#!/usr/bin/env bash
# The whole C++ suite (tlcore_tests: data, augment, loader, models, training,
# inference) built with ASan+UBSan by clang in build-sanitize, then run. Slow: the
# torch half compiles for about half an hour on two cores. CI runs the torch-free
# part only (scripts/test.sh); run this before a release or after touching memory code.
# Usage: scripts/sanitize.sh [GTEST_FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."

export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$PWD")}"
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DTLCORE_SANITIZE=ON -DTLCORE_BUILD_PYTHON=OFF -DTLCORE_BUILD_TESTS=ON \
  -DPython3_EXECUTABLE="$PWD/.venv/bin/python" >/dev/null
cmake --build build-sanitize --target tlcore_tests
# libtorch's own allocations at exit are not ours to find; UBSan findings abort.
export ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
TLCORE_SHARED="$PWD/../shared" build-sanitize/tlcore_tests --gtest_filter="${1:-*}"
