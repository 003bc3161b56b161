#!/usr/bin/env bash
# The dashboard's cost to the server (issue #13: "under 100 open dashboards the server's ingest
# and check figures drop by no more than 5 %"): closed-loop ingest and check throughput without
# and with DASHBOARDS open dashboards, alternated ROUNDS times so that drift on a shared machine
# shows, then both averages and their ratio.
#
# An open dashboard is simulated by what its page asks for (web/dashboard/app.js): a customer
# view polls its limits, denials, wallet, ledger and alerts every second and its history and
# breakdown every 5 s; an admin view polls its customer list, top customers, alert feed,
# organizations and audit log every 5 s and the live rates every 2 s. DASHBOARDS * 0.9 customer
# views and DASHBOARDS * 0.1 admin views are replayed as one open-loop tally_loadgen per
# endpoint at the summed rate (about 5.5 requests/s per dashboard). They send the admin key
# rather than a session cookie (the server checks either with one hash and one lookup). The
# generators run on this machine too, so the drop measured here includes their own CPU.
#
# Usage: bash bench/dashboard_load.sh
#   BUILD=build/bench (default; built in release mode first) or an existing build directory
#   DASHBOARDS=100  DURATION=10 (seconds per figure)  ROUNDS=2  TALLY_THREADS=2
# Starts its own tally on a loopback port with a temporary directory and stops every process it
# started by its id.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build/bench}"
if [ "$build" = build/bench ]; then
  cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALLY_BUILD_TESTS=OFF \
    -DTALLY_BUILD_BENCH=ON >/dev/null
  cmake --build "$build" --target tally tally_loadgen >/dev/null
fi
loadgen="$build/bench/tally_loadgen"
dashboards="${DASHBOARDS:-100}"
duration="${DURATION:-10}"
rounds="${ROUNDS:-2}"
tmp="$(mktemp -d /tmp/tally-dashload-XXXXXX)"
pids=()
dash_pids=()
cleanup() {
  for p in "${dash_pids[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export TALLY_ADMIN_KEY="bench-admin-key-0123456789abcdef"
key="$TALLY_ADMIN_KEY"

cat > "$tmp/tally.toml" <<TOML
[server]
threads = ${TALLY_THREADS:-2}
[storage]
fsync = true
[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "\$.input_tokens"
group_by = ["provider", "model"]
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]
[[plans]]
key = "bench"
limits = [
  { meter = "api_calls", period = "day", amount = 1000000000000 },
  { meter = "tokens_in", period = "month", amount = 1000000000000 },
]
[enforcement]
default_plan = "bench"
TOML
"$build/tally" serve --config "$tmp/tally.toml" --data "$tmp/data" --listen 127.0.0.1:0 \
  --port-file "$tmp/port" > "$tmp/tally.log" 2>&1 &
tally_pid=$!
pids+=("$tally_pid")
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
port="$(cat "$tmp/port")"
for c in $(seq 0 99); do
  org=$([ $((c % 10)) -lt 5 ] && echo "\"org-$((c % 10))\"" || echo null)
  curl -s -o /dev/null -XPOST "127.0.0.1:$port/v1/customers" -H "x-api-key: $key" \
    -H 'content-type: application/json' -d "{\"id\":\"cust-$c\",\"organization\":$org}"
done

# One open-loop generator per endpoint the open dashboards poll, at their summed rate.
start_dashboards() {
  local customers=$((dashboards * 9 / 10)) admins=$((dashboards - dashboards * 9 / 10))
  local since
  since="$(date -u -d '30 days ago' +%Y-%m-%dT%H:%M:%SZ)"
  local c=/v1/customers/cust-7
  local -a polls=(
    "$customers $c/limits" "$customers $c/denials" "$customers $c/wallet"
    "$customers $c/wallet/transactions?limit=1000&from=$since"
    "$customers /v1/alerts?customer=cust-7&limit=1000&from=$since"
    "$((customers / 5)) $c/usage/history?meter=api_calls&window=day&windows=7"
    "$((customers / 5)) $c/report?group_by=service"
    "$((admins / 5)) /v1/admin/customers?sort=id&order=asc&offset=0&limit=50"
    "$((admins / 5)) /v1/admin/usage/top?meter=api_calls&n=10"
    "$((admins / 5)) /v1/alerts?limit=1000&from=$since"
    "$((admins / 5)) /v1/admin/organizations?limit=20"
    "$((admins / 5)) /v1/admin/audit?limit=20"
    "$((admins / 2)) /v1/admin/live"
  )
  dash_pids=()
  local i=0
  for p in "${polls[@]}"; do
    local rate="${p%% *}" path="${p#* }"
    [ "$rate" -gt 0 ] || continue
    "$loadgen" --port "$port" --mode get --path "$path" --key "$key" --connections 4 \
      --rate "$rate" --duration-s 100000 > "$tmp/dash-$i.json" 2>/dev/null &
    dash_pids+=("$!")
    i=$((i + 1))
  done
  sleep 2
}
stop_dashboards() {
  for p in "${dash_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  dash_pids=()
}

figure() {  # $1 = field, then loadgen flags: prints the field of loadgen's JSON
  local field="$1"
  shift
  "$loadgen" --port "$port" --key "$key" --duration-s "$duration" "$@" |
    sed -n "s/.*\"$field\":\([0-9.]*\).*/\1/p"
}

for round in $(seq "$rounds"); do
  for variant in quiet dashboards; do
    [ "$variant" = dashboards ] && start_dashboards
    ingest=$(figure events_per_s --mode ingest --batch 1000 --connections 16)
    check=$(figure requests_per_s --mode post --path /v1/check --connections 32 \
      --body '{"customer":"cust-3","meter":"api_calls","amount":1}')
    [ "$variant" = dashboards ] && stop_dashboards
    n=$([ "$variant" = dashboards ] && echo "$dashboards" || echo 0)
    echo "{\"round\":$round,\"dashboards\":$n,\"ingest_events_per_s\":$ingest,\"check_requests_per_s\":$check}"
    echo "$variant $ingest $check" >> "$tmp/figures"
  done
done
awk -v d="$dashboards" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" '
  { ingest[$1] += $2; check[$1] += $3; n[$1]++ }
  END {
    iq = ingest["quiet"] / n["quiet"]; id = ingest["dashboards"] / n["dashboards"]
    cq = check["quiet"] / n["quiet"]; cd = check["dashboards"] / n["dashboards"]
    printf "{\"summary\":true,\"dashboards\":%d,\"ingest_events_per_s\":{\"without\":%.0f,\"with\":%.0f,\"ratio\":%.4f},\"check_requests_per_s\":{\"without\":%.0f,\"with\":%.0f,\"ratio\":%.4f},\"load_average\":\"%s\"}\n", d, iq, id, id / iq, cq, cd, cd / cq, load
  }' "$tmp/figures"

# The same dashboards alone, against an otherwise idle server: the CPU the server spends on
# them (its utime + stime from /proc over the run) as a share of the CPUs it has. On a machine
# where the load generators share the server's cores, the ratios above swing by more than the
# bound; this share is what the dashboards can take from a CPU-bound server at most.
ticks() { awk '{print $14 + $15}' "/proc/$tally_pid/stat"; }
start_dashboards
t0=$(ticks)
s0=$(date +%s.%N)
sleep "$duration"
t1=$(ticks)
s1=$(date +%s.%N)
stop_dashboards
awk -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$(getconf CLK_TCK)" \
  -v cpus="$(nproc)" -v d="$dashboards" '
  BEGIN {
    cores = (t1 - t0) / hz / (s1 - s0)
    printf "{\"dashboards_alone\":true,\"dashboards\":%d,\"server_cpu_cores\":%.4f,\"share_of_%d_cpus\":%.4f}\n",
      d, cores, cpus, cores / cpus
  }'
