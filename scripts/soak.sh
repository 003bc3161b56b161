#!/usr/bin/env bash
# Soak: runs `tally serve` for MINUTES (default 10) at about half its maximum ingest rate, with
# checks and usage queries mixed in, and prints one line per minute: the server's RSS, its open
# files, and the p99 latency of ingest, check and query in that minute. Flat is the goal: RSS,
# files or p99 that climb minute after minute are a leak or a slow-down. Not part of the suite.
#
#   scripts/soak.sh [MINUTES]
#
# The maximum is measured first with a 10 s closed-loop ingest run of tally_loadgen (batches of
# RATE_BATCH events, default 100, on 8 connections), unless RATE (batches/s) is given. The
# load, each minute, all open loop: ingest at RATE batches/s, consuming checks at CHECK_RATE/s
# (default 200) and usage queries at QUERY_RATE/s (default 200).
#
# Environment: TALLY_BIN and TALLY_LOADGEN (default: build/bench, else build/release, else
# build/test; a sanitizer build's RSS and latency are not a release's), RATE, RATE_BATCH,
# CHECK_RATE, QUERY_RATE, KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-10}
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
  echo "usage: scripts/soak.sh [MINUTES]" >&2
  exit 2
fi
bin=${TALLY_BIN:-}
loadgen=${TALLY_LOADGEN:-}
for d in build/bench build/release build/test; do
  if [ -z "$bin" ] && [ -x "$d/tally" ] && [ -x "$d/bench/tally_loadgen" ]; then
    bin=$d/tally
    loadgen=${loadgen:-$d/bench/tally_loadgen}
  fi
done
if [ -z "$bin" ] || [ ! -x "$bin" ] || [ -z "$loadgen" ] || [ ! -x "$loadgen" ]; then
  echo "soak: no tally and tally_loadgen (build them, or set TALLY_BIN and TALLY_LOADGEN)" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-soak.XXXXXX")
key="soak-admin-key-0123456789abcdef"
export TALLY_ADMIN_KEY=$key
server_pid=
gen_pids=()
cleanup() {
  for p in "${gen_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

cat >"$work/tally.toml" <<'TOML'
[server]
threads = 2

[storage]
fsync = true

[enforcement]
default_plan = "soak"

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"
group_by = ["provider", "model"]

[[meters]]
key = "tokens_out"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.output_tokens"
group_by = ["provider", "model"]

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "soak"
limits = [
  { meter = "api_calls", period = "day", amount = 1000000000000 },
  { meter = "api_calls", period = "minute", amount = 1000000000000 },
]
TOML
for c in $(seq 0 99); do printf '\n[[customers]]\nid = "cust-%d"\n' "$c" >>"$work/tally.toml"; done

"$bin" serve --config "$work/tally.toml" --data "$work/data" --listen 127.0.0.1:0 \
  --port-file "$work/port" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  [ -s "$work/port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 2; }
  sleep 0.1
done
port=$(cat "$work/port")

# json_field FILE NAME: a number from the load generator's one-line JSON (first match).
json_field() { grep -o "\"$2\":[0-9.]*" "$1" | head -1 | cut -d: -f2; }
p99() { grep -o '"p99":[0-9.]*' "$1" | cut -d: -f2; }

batch=${RATE_BATCH:-100}
rate=${RATE:-}
if [ -z "$rate" ]; then
  "$loadgen" --port "$port" --mode ingest --key "$key" --batch "$batch" --connections 8 \
    --duration-s 10 >"$work/max.json"
  max=$(json_field "$work/max.json" requests_per_s)
  rate=$(awk -v m="$max" 'BEGIN { r = int(m / 2); print (r < 1 ? 1 : r) }')
  echo "soak: maximum ingest $max batches/s of $batch events (10 s closed loop); running at $rate"
fi
echo "soak: $bin, pid $server_pid, $minutes min: ingest $rate batches/s x $batch events," \
  "checks ${CHECK_RATE:-200}/s, queries ${QUERY_RATE:-200}/s"
printf '%-6s %10s %6s %12s %12s %12s %10s\n' minute rss_mib files ingest_p99 check_p99 \
  query_p99 events_s

for minute in $(seq 1 "$minutes"); do
  gen_pids=()
  "$loadgen" --port "$port" --mode ingest --key "$key" --batch "$batch" --connections 32 \
    --rate "$rate" --duration-s 60 --run-id "soak$minute" >"$work/ingest.json" &
  gen_pids+=($!)
  "$loadgen" --port "$port" --mode post --path /v1/check --key "$key" --connections 16 \
    --body '{"customer":"cust-7","meter":"api_calls","amount":1}' --rate "${CHECK_RATE:-200}" \
    --duration-s 60 >"$work/check.json" &
  gen_pids+=($!)
  "$loadgen" --port "$port" --mode get --path /v1/customers/cust-1/usage --key "$key" \
    --connections 16 --rate "${QUERY_RATE:-200}" --duration-s 60 >"$work/query.json" &
  gen_pids+=($!)
  for p in "${gen_pids[@]}"; do wait "$p" || true; done
  gen_pids=()
  rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$server_pid/status")
  files=$(ls "/proc/$server_pid/fd" | wc -l)
  printf '%-6s %10.1f %6s %10s ms %9s ms %9s ms %10.0f\n' "$minute" \
    "$(awk -v k="$rss_kib" 'BEGIN { print k / 1024 }')" "$files" "$(p99 "$work/ingest.json")" \
    "$(p99 "$work/check.json")" "$(p99 "$work/query.json")" \
    "$(json_field "$work/ingest.json" events_per_s)"
done
