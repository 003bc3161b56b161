#!/usr/bin/env bash
# Command (2): installs what is missing, builds with warnings as errors under AddressSanitizer
# and UndefinedBehaviorSanitizer, and runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

build=build/test
cmake -G Ninja -S . -B "$build" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTALLY_WERROR=ON \
  -DTALLY_SANITIZE=ON \
  -DTALLY_BUILD_BENCH=ON
cmake --build "$build"
# The libFuzzer targets, built by clang-14 in build/fuzz; ctest's fuzz_smoke runs each for 3 s.
bash scripts/fuzz.sh --build
# The official clients of other systems (tests/clients), exactly as the lockfile pins them.
# playwright-core (the dashboard's browser test) drives Debian's /usr/bin/chromium: no download.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/clients --no-audit --no-fund

# LeakSanitizer is on; a leak fails the test that made it.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd "$build"
ctest --output-on-failure --timeout 900 -j "$(nproc)"
