#!/usr/bin/env bash
# Runs every libFuzzer harness of the sanitizer build (build-sanitize, made by
# scripts/setup.sh) on its seed corpus for SECONDS each (default 900), one per
# core, or until RUNS executions (default: no cap), after replaying its past
# findings (tests/fuzz/regressions/<harness>/). New findings land in
# build-sanitize/findings/<harness>/; the run fails if any harness found one.
# Usage: scripts/fuzz.sh [SECONDS] [HARNESS...]     e.g. scripts/fuzz.sh 30
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-900}
shift || true
build=build-sanitize
harnesses=("$@")
if ((${#harnesses[@]} == 0)); then
  for f in "$build"/tests/fuzz/fuzz_*; do [ -x "$f" ] && harnesses+=("$(basename "$f" | sed 's/^fuzz_//')"); done
fi
if ((${#harnesses[@]} == 0)); then
  echo "fuzz: no harnesses in $build (run scripts/setup.sh)" >&2
  exit 1
fi

# Seeds: small valid files of every kind, written by the library and its peers.
corpus="$build/corpus"
[ -d "$corpus/shards" ] || .venv/bin/python tests/fuzz/make_corpus.py "$corpus" >/dev/null
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/lsan.supp:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"

run_one() {
  local name=$1 log="$build/findings/$1.log"
  mkdir -p "$build/findings/$name" "$corpus/$name"
  # Every past finding first: each must now pass.
  local regressions=(tests/fuzz/regressions/"$name"/*)
  if [ -f "${regressions[0]}" ] && ! "$build/tests/fuzz/fuzz_$name" "${regressions[@]}" >"$log" 2>&1; then
    echo "fuzz: $name: a past finding fails again (see $log)"
    return 1
  fi
  # The corpus grows with what the fuzzer finds; seeds stay in the same folder.
  "$build/tests/fuzz/fuzz_$name" "$corpus/$name" -max_total_time="$seconds" ${RUNS:+-runs=$RUNS} \
    -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$build/findings/$name/" >"$log" 2>&1
  local rc=$?
  local execs cov
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -aoE "cov: [0-9]+" "$log" | tail -1 | grep -oE "[0-9]+")
  if [ $rc -eq 0 ]; then
    echo "fuzz: $name: ${execs:-?} executions, coverage ${cov:-?} edges, no finding"
  else
    echo "fuzz: $name: FOUND a problem after ${execs:-?} executions (see $log and $build/findings/$name/)"
    grep -a -m3 -E "ERROR|SUMMARY|terminate" "$log" | sed 's/^/    /'
  fi
  return $rc
}

failed=0
pids=()
for name in "${harnesses[@]}"; do
  run_one "$name" &
  pids+=($!)
  if ((${#pids[@]} >= $(nproc))); then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
exit $failed
