#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz) for SECONDS each (default 60) on a copy of its seed
# corpus, building them first with clang-14 in build/fuzz when needed, and prints one line per
# target: executions, crashes, and where the crashing inputs are. Exits 1 when any target
# crashed (or found a leak, a timeout or an out-of-memory input), 2 when it could not build.
#
#   scripts/fuzz.sh [SECONDS]      run every target
#   scripts/fuzz.sh --build        only configure and build build/fuzz
#
# Environment: FUZZ_TARGETS="codec config" runs only those; FUZZ_JOBS=N runs N targets at once
# (default 1: the machine's cores are shared); FUZZ_OUT=DIR keeps each run's corpus, log and
# crash files there (default build/fuzz/runs/<date>); FUZZ_BUILD=DIR builds elsewhere.
# Reproduce a crash with: build/fuzz/fuzz_<target> <crash file>
set -euo pipefail
cd "$(dirname "$0")/.."

build=${FUZZ_BUILD:-build/fuzz}
all_targets=(ingest_body check_body config http_request archive_line archive_manifest archive_file
  codec)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"

build_only=0
seconds=60
case "${1:-}" in
  --build) build_only=1 ;;
  "") ;;
  *[!0-9]* | 0)
    echo "usage: scripts/fuzz.sh [SECONDS] | --build" >&2
    exit 2
    ;;
  *) seconds=$1 ;;
esac

cxx=${FUZZ_CXX:-clang++-14}
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "fuzz: $cxx not found (scripts/setup.sh installs clang-14 and libfuzzer-14-dev)" >&2
  exit 2
fi
if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTALLY_FUZZ=ON -DTALLY_BUILD_TESTS=OFF -DTALLY_BUILD_BENCH=OFF >"$build.configure.log" 2>&1 || {
    cat "$build.configure.log" >&2
    exit 2
  }
fi
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
if ! cmake --build "$build" --target "${build_targets[@]}" >"$build/fuzz-build.log" 2>&1; then
  tail -50 "$build/fuzz-build.log" >&2
  exit 2
fi
if [ "$build_only" = 1 ]; then
  echo "fuzz: built ${build_targets[*]} in $build"
  exit 0
fi

out=${FUZZ_OUT:-$build/runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# run_target NAME: fuzzes one target; its log, corpus and crash files go in $out/NAME/.
run_target() {
  local t=$1 dir=$out/$1
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/crashes"
  if [ -d "tests/fuzz/corpus/$t" ]; then
    cp -r "tests/fuzz/corpus/$t/." "$dir/corpus/"
  fi
  # Inputs long enough to cross the parsers' limits (8 KiB property values, a 12 KB example
  # config); libFuzzer's default would stop at 4 KiB.
  local max_len=4096
  case "$t" in
    ingest_body | config | archive_file) max_len=20000 ;;
    check_body | archive_line) max_len=10000 ;;
  esac
  # check_body's engine keeps what inputs store, so nearly every input allocates more than it
  # frees and libFuzzer's per-input leak check would scan the whole heap each time (40 inputs/s
  # instead of a thousand): that target runs without it (the suite's LeakSanitizer runs of the
  # handlers and engine tests cover those paths).
  local detect_leaks=1
  if [ "$t" = check_body ]; then detect_leaks=0; fi
  # -timeout: one input taking 10 s is a hang. Leaks are findings (LeakSanitizer is on).
  TMPDIR="$dir" "$build/fuzz_$t" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
    -detect_leaks="$detect_leaks" -print_final_stats=1 -artifact_prefix="$dir/crashes/" \
    "$dir/corpus" >"$dir/log" 2>&1 || true
}

if [ "${FUZZ_JOBS:-1}" -le 1 ]; then
  for t in "${targets[@]}"; do run_target "$t"; done
else
  running=0
  for t in "${targets[@]}"; do
    run_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$FUZZ_JOBS" ]; then
      wait -n || true
      running=$((running - 1))
    fi
  done
  wait || true
fi

failed=0
for t in "${targets[@]}"; do
  dir=$out/$t
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  crashes=$(find "$dir/crashes" -type f | wc -l)
  if [ -z "$execs" ]; then
    # No final statistics: the target died outside an input (at start-up, or a crash that
    # left no artifact). Count it as a failure and show where the log is.
    line=$(printf '%-17s executions %10s crashes %d  (no statistics; see %s)' "$t" "?" "$crashes" \
      "$dir/log")
    failed=1
  elif [ "$crashes" -gt 0 ]; then
    line=$(printf '%-17s executions %10s crashes %d  in %s (log %s)' "$t" "$execs" "$crashes" \
      "$dir/crashes" "$dir/log")
    failed=1
  else
    line=$(printf '%-17s executions %10s crashes 0' "$t" "$execs")
  fi
  echo "$line"
done
exit "$failed"
