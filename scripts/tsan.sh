#!/usr/bin/env bash
# Builds the concurrent parts' tests with ThreadSanitizer (TALLY_TSAN, in build/tsan) and runs
# them. Exits 1 when a test fails or TSan reports a race (halt_on_error), 2 when it cannot build.
#
#   scripts/tsan.sh            build, then run every suite below
#   scripts/tsan.sh --build    only configure and build
#
# What runs, and why these: every engine test drives the commit thread (the only writer) from
# other threads, with checks, reservations and alerts answered beside it; the store tests
# write and scan at once; the HTTP server and work pool tests run I/O threads and scan threads;
# the histogram behind /metrics is written lock-free by many threads. Environment:
# TSAN_BUILD=DIR builds elsewhere; TSAN_JOBS=N (default 2) compile jobs; TSAN_FILTER=PATTERN
# passes --gtest_filter to every binary.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${TSAN_BUILD:-build/tsan}
jobs=${TSAN_JOBS:-2}
suites=(tally_core_tests:'LatencyHistogram*' tally_store_tests:'*' tally_engine_tests:'*'
  tally_http_tests:'Server*:*WorkPool*')

targets=()
for s in "${suites[@]}"; do
  targets+=("${s%%:*}")
done
if ! cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTALLY_WERROR=ON \
  -DTALLY_TSAN=ON -DTALLY_SANITIZE=OFF -DTALLY_BUILD_BENCH=OFF >"$build.configure.log" 2>&1 ||
  ! nice cmake --build "$build" -j "$jobs" --target "${targets[@]}"; then
  echo "tsan: the build failed (configure log: $build.configure.log)" >&2
  exit 2
fi
[[ ${1:-} == --build ]] && exit 0

# halt_on_error: the first race fails its test binary; second_deadlock_stack: both stacks of a
# lock-order inversion. scripts/tsan.supp may name only code outside Tally.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/scripts/tsan.supp ${TSAN_OPTIONS:-}"
failed=()
for s in "${suites[@]}"; do
  binary=${s%%:*}
  filter=${TSAN_FILTER:-${s#*:}}
  echo "tsan: $binary --gtest_filter=$filter"
  if ! "$build/tests/$binary" --gtest_filter="$filter" --gtest_list_tests | grep -q '^  '; then
    echo "tsan: $binary: --gtest_filter=$filter selects no test" >&2
    failed+=("$binary")
    continue
  fi
  if ! "$build/tests/$binary" --gtest_filter="$filter" --gtest_brief=1; then
    failed+=("$binary")
  fi
done
if ((${#failed[@]} > 0)); then
  echo "tsan: failed: ${failed[*]}" >&2
  exit 1
fi
echo "tsan: every suite passed without a race report"
