#!/usr/bin/env bash
# SIGKILL loop: proves that no acknowledged event is lost or stored twice when the server dies
# at any moment under mixed load.
#
#   scripts/crash-loop.sh [CYCLES]     (default 20)
#
# Each cycle starts `tally serve` on a temporary data directory (kept across cycles) and a free
# loopback port, runs tally_crash_loader against it (ingest batches with unique event ids,
# consuming checks with an event_id, deliberate retries, and every request a previous cycle left
# unanswered sent again), and SIGKILLs the server at a random moment: usually 0.2-2 s into the
# load, and one cycle in ten during start-up, while it recovers. After the last cycle the server
# is started once more and stopped cleanly; then every event is exported (`tally export`) and
# compared with what the server acknowledged, and `tally verify` recomputes every aggregate.
# Consuming checks are acknowledged only once durable here (check_durability = "sync"): with
# the default "async", the documented loss window of the last commit would apply to them.
#
# The last line of output is always
#   cycles N acknowledged N lost N doubled N verify ok|failed
# and the exit status is 1 when anything was lost or doubled, a retry was answered wrongly
# (printed above the line) or verify failed; 2 when the server could not be run at all.
#
# Environment: TALLY_BIN (default build/test/tally, else build/release/tally),
# TALLY_CRASH_LOADER (default tests/tally_crash_loader in TALLY_BIN's build directory), SEED (default random),
# LOAD_THREADS (3), LOAD_RATE (requests/s per thread, 50), LOAD_BATCH (events per batch, 5),
# KEEP=1 keeps the work directory (it is kept anyway when something failed).
set -euo pipefail
cd "$(dirname "$0")/.."

cycles=${1:-20}
if ! [[ "$cycles" =~ ^[0-9]+$ ]] || [ "$cycles" -lt 1 ]; then
  echo "usage: scripts/crash-loop.sh [CYCLES]" >&2
  exit 2
fi
bin=${TALLY_BIN:-}
if [ -z "$bin" ]; then
  for b in build/test/tally build/release/tally; do
    if [ -x "$b" ]; then bin=$b && break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "crash-loop: no tally binary (build one, or set TALLY_BIN)" >&2
  exit 2
fi
loader=${TALLY_CRASH_LOADER:-}
if [ -z "$loader" ]; then
  for l in "$(dirname "$bin")/tests/tally_crash_loader" "$(dirname "$bin")/tally_crash_loader"; do
    if [ -x "$l" ]; then loader=$l && break; fi
  done
fi
if [ -z "$loader" ] || [ ! -x "$loader" ]; then
  echo "crash-loop: no tally_crash_loader beside $bin (cmake --build <dir> --target" \
    "tally_crash_loader, or set TALLY_CRASH_LOADER)" >&2
  exit 2
fi
seed=${SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-crash-loop.XXXXXX")
mkdir -p "$work/state"
key="crash-loop-admin-key-$seed-0123456789"
export TALLY_ADMIN_KEY=$key
# Sanitizer builds: a SIGKILLed server leaves no report; a leak at a clean stop fails the run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

server_pid=
loader_pid=
cleanup() {
  if [ -n "$loader_pid" ] && kill -0 "$loader_pid" 2>/dev/null; then kill -9 "$loader_pid" || true; fi
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -9 "$server_pid" || true; fi
  if [ "${KEEP:-0}" != 1 ] && [ "${failed:-1}" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

{
  echo '[enforcement]'
  echo 'check_durability = "sync"'
  echo 'default_plan = "standard"'
  echo
  echo '[[meters]]'
  echo 'key = "calls"'
  echo 'event_type = "api_call"'
  echo 'aggregation = "count"'
  echo
  echo '[[meters]]'
  echo 'key = "bytes"'
  echo 'event_type = "api_call"'
  echo 'aggregation = "sum"'
  echo 'value = "$.bytes"'
  echo 'group_by = ["route"]'
  echo
  echo '[[meters]]'
  echo 'key = "premium"'
  echo 'event_type = "premium_call"'
  echo 'aggregation = "count"'
  echo
  echo '[[plans]]'
  echo 'key = "standard"'
  echo 'limits = ['
  echo '  { meter = "calls", period = "day", amount = 1000000000 },'
  echo '  { meter = "premium", period = "day", amount = 30 },'
  echo ']'
  for c in $(seq 0 19); do
    printf '\n[[customers]]\nid = "c%d"\n' "$c"
  done
} >"$work/tally.toml"

start_server() {
  rm -f "$work/port"
  "$bin" serve --config "$work/tally.toml" --data "$work/data" --listen 127.0.0.1:0 \
    --port-file "$work/port" --threads 2 >>"$work/server.log" 2>&1 &
  server_pid=$!
}

# wait_ready: waits for the port file; fails when the server exited or took 120 s.
wait_ready() {
  for _ in $(seq 1 1200); do
    if [ -s "$work/port" ]; then return 0; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "crash-loop: the server exited at start-up (log: $work/server.log)" >&2
      tail -20 "$work/server.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "crash-loop: the server did not start in 120 s (log: $work/server.log)" >&2
  return 1
}

kill_server() {
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

seconds_text() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

failed=1
started_at=$SECONDS
for cycle in $(seq 1 "$cycles"); do
  start_server
  if [ $((RANDOM % 10)) -eq 0 ]; then
    # During start-up: opening the store, recovery, loading state.
    sleep "$(seconds_text $((RANDOM % 400)))"
    kill_server
    continue
  fi
  if ! wait_ready; then
    kill_server
    echo "cycles $((cycle - 1)) acknowledged 0 lost 0 doubled 0 verify failed"
    exit 2
  fi
  "$loader" load --port "$(cat "$work/port")" --key "$key" --state "$work/state" \
    --cycle "$cycle" --seed "$seed" --threads "${LOAD_THREADS:-3}" --rate "${LOAD_RATE:-50}" \
    --batch "${LOAD_BATCH:-5}" >>"$work/loader.log" 2>&1 &
  loader_pid=$!
  sleep "$(seconds_text $((200 + RANDOM % 1800)))"
  kill_server
  wait "$loader_pid" || echo "crash-loop: the loader failed in cycle $cycle (see $work/loader.log)" >&2
  loader_pid=
  if [ $((cycle % 50)) -eq 0 ]; then
    echo "crash-loop: $cycle of $cycles cycles, $((SECONDS - started_at)) s" >&2
  fi
done

# A last start recovers what the last kill left; a clean stop follows.
start_server
if ! wait_ready; then
  kill_server
  echo "cycles $cycles acknowledged 0 lost 0 doubled 0 verify failed"
  exit 2
fi
kill -TERM "$server_pid"
wait "$server_pid" || echo "crash-loop: the server's clean stop failed (log: $work/server.log)" >&2
server_pid=

verify=failed
if "$bin" verify --config "$work/tally.toml" --data "$work/data" >"$work/verify.log" 2>&1; then
  verify=ok
else
  echo "crash-loop: tally verify failed (log: $work/verify.log)" >&2
  tail -5 "$work/verify.log" >&2
fi
"$bin" export --config "$work/tally.toml" --data "$work/data" --format jsonl \
  --output "$work/events.jsonl" --quiet >"$work/export.log" 2>&1 || {
  echo "crash-loop: tally export failed (log: $work/export.log)" >&2
  echo "cycles $cycles acknowledged 0 lost 0 doubled 0 verify $verify"
  exit 1
}
counts=$("$loader" verify --state "$work/state" --export "$work/events.jsonl" 2>"$work/compare.log") || true
cat "$work/compare.log" >&2
read -r _ acknowledged _ lost _ doubled _ online_errors _ <<<"$counts"
if [ "${online_errors:-1}" != 0 ]; then
  echo "crash-loop: ${online_errors:-?} wrong answers to retries (see $work/state/errors-*.txt)" >&2
fi
if [ "${lost:-1}" = 0 ] && [ "${doubled:-1}" = 0 ] && [ "${online_errors:-1}" = 0 ] &&
  [ "$verify" = ok ]; then
  failed=0
else
  echo "crash-loop: seed $seed; work directory kept: $work" >&2
fi
echo "cycles $cycles acknowledged ${acknowledged:-?} lost ${lost:-?} doubled ${doubled:-?} verify $verify"
exit "$failed"
