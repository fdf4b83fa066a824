#!/usr/bin/env bash
# Runs every test: the C++ GoogleTest suite through ctest; the torch-free C++ tests
# under ASan+UBSan and a 30 s smoke of every fuzz harness (each counts as one test);
# then pytest. Ends with one line "tests: N passed, N failed, N skipped" over all.
set -uo pipefail
cd "$(dirname "$0")/.."

ctest_log=$(mktemp)
pytest_log=$(mktemp)
sanitize_log=$(mktemp)
trap 'rm -f "$ctest_log" "$pytest_log" "$sanitize_log"' EXIT

ctest --test-dir build --output-on-failure -j "$(nproc)" 2>&1 | tee "$ctest_log"
ctest_rc=${PIPESTATUS[0]}
TLCORE_SHARED="$PWD/../shared" build-sanitize/tests/fuzz/tlcore_image_tests 2>&1 | tee "$sanitize_log" | tail -3
sanitize_rc=${PIPESTATUS[0]}
scripts/fuzz.sh "${TLCORE_FUZZ_SECONDS:-30}" 2>&1 | tee -a "$sanitize_log"
fuzz_rc=${PIPESTATUS[0]}
.venv/bin/python -m pytest tests/python -q -rs "$@" 2>&1 | tee "$pytest_log"
pytest_rc=${PIPESTATUS[0]}

# ctest: "95% tests passed, 1 tests failed out of 20"; pytest: "3 passed, 1 skipped in 2s".
c_total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$ctest_log" | tail -1)
c_failed=$(sed -n 's/.*, \([0-9]*\) tests failed out of.*/\1/p' "$ctest_log" | tail -1)
c_skipped=$(grep -c "\*\*\*Skipped\|Not Run" "$ctest_log" || true)
summary=$(grep -E "[0-9]+ (passed|failed|skipped|error)" "$pytest_log" | tail -1)
count() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE "[0-9]+" || echo 0; }
p_passed=$(count passed); p_failed=$(count failed); p_errors=$(count error); p_skipped=$(count skipped)
c_total=${c_total:-0}; c_failed=${c_failed:-0}
# gtest: "[  PASSED  ] 67 tests." / "[  FAILED  ] 1 test, listed below:"; fuzz.sh: one line per harness.
s_passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$sanitize_log" | tail -1)
s_failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$sanitize_log" | tail -1)
[ "$sanitize_rc" -ne 0 ] && [ -z "$s_failed" ] && s_failed=1  # it crashed before its summary
f_passed=$(grep -c "^fuzz: .*no finding" "$sanitize_log" || true)
f_failed=$(grep -c "^fuzz: .*\(FOUND\|fails again\|no harnesses\)" "$sanitize_log" || true)
passed=$((c_total - c_failed - c_skipped + p_passed + ${s_passed:-0} + f_passed))
failed=$((c_failed + p_failed + p_errors + ${s_failed:-0} + f_failed))
skipped=$((c_skipped + p_skipped))
[ "$pytest_rc" -eq 5 ] && pytest_rc=0  # pytest: no tests collected is not a failure of the suite
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$ctest_rc" -eq 0 ] && [ "$pytest_rc" -eq 0 ] && [ "$sanitize_rc" -eq 0 ] && [ "$fuzz_rc" -eq 0 ]
