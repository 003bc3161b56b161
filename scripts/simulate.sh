#!/usr/bin/env bash
# Runs the deterministic simulation (tests/simulation, docs/operations.md "Simulation") for many
# seeds: scripts/simulate.sh [SEEDS] [FIRST_SEED]. Prints one line `seeds N failures N` and, for
# each failing seed, what differed and the command that replays it. Exits 1 when a seed fails.
#
# The test binary is $TALLY_SIM_BIN, else build/test/tests/tally_simulation_tests (the CI
# build: cmake --build build/test --target tally_simulation_tests). TALLY_SIM_STEPS changes the
# steps per seed.
set -euo pipefail

seeds="${1:-1000}"
first="${2:-1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TALLY_SIM_BIN:-$root/build/test/tests/tally_simulation_tests}"
if [[ ! -x "$bin" ]]; then
  echo "simulate.sh: no test binary at $bin (build the tally_simulation_tests target)" >&2
  exit 2
fi
if ! [[ "$seeds" =~ ^[0-9]+$ && "$first" =~ ^[0-9]+$ && "$seeds" -gt 0 && "$first" -gt 0 ]]; then
  echo "usage: scripts/simulate.sh [SEEDS] [FIRST_SEED]  (positive whole numbers)" >&2
  exit 2
fi

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
set +e
TALLY_SIM_SEEDS="$seeds" TALLY_SIM_FIRST_SEED="$first" \
  "$bin" --gtest_filter=Simulation.Seeds --gtest_brief=1 >"$out" 2>&1
status=$?
set -e

summary="$(grep -E '^seeds [0-9]+ failures [0-9]+' "$out" | tail -1 || true)"
if [[ -z "$summary" ]]; then
  # The binary died before its summary (a sanitizer report, a crash): show why.
  tail -40 "$out"
  echo "seeds $seeds failures unknown (the test binary exited with $status)"
  exit 1
fi
echo "${summary%% (*}"
echo "  (${summary#*(}"
{ grep -E '^failing seed ' "$out" || true; } | while read -r _ _ seed rest; do
  seed="${seed%:}"
  echo "seed $seed: $rest"
  echo "  reproduce: TALLY_SIM_SEED=$seed TALLY_SIM_LOG=1 $bin --gtest_filter=Simulation.Seeds"
done
exit "$status"
