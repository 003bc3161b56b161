#!/usr/bin/env bash
# Runs the benchmarks of bench/README.md on this machine and prints one JSON line per figure.
# Usage: bash bench/run.sh [ingest|check|pricing|all]   (builds build/bench in release mode first)
# Starts its own tally, nginx and redis-server on loopback ports with temporary directories and
# stops them by process id.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
build=build/bench
cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALLY_BUILD_TESTS=OFF \
  -DTALLY_BUILD_BENCH=ON >/dev/null
cmake --build "$build" >/dev/null
tmp="$(mktemp -d /tmp/tally-bench-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export TALLY_ADMIN_KEY="bench-admin-key-0123456789abcdef"
key="$TALLY_ADMIN_KEY"

start_tally() {  # $1 = extra TOML
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
key = "tokens_out"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "\$.output_tokens"
group_by = ["provider", "model"]
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
[[plans]]
key = "bench"
limits = [
  { meter = "api_calls", period = "day", amount = 1000000000000 },
  { meter = "api_calls", period = "minute", amount = 1000000000000 },
]
[enforcement]
default_plan = "bench"
$1
TOML
  rm -rf "$tmp/data" "$tmp/port"
  "$build/tally" serve --config "$tmp/tally.toml" --data "$tmp/data" --listen 127.0.0.1:0 \
    --port-file "$tmp/port" > "$tmp/tally.log" 2>&1 &
  tally_pid=$!
  pids+=("$tally_pid")
  for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
  port="$(cat "$tmp/port")"
}
stop_tally() { kill "$tally_pid"; wait "$tally_pid" 2>/dev/null || true; }

if [ "$what" = ingest ] || [ "$what" = all ]; then
  start_tally ""
  for c in $(seq 0 99); do
    curl -s -o /dev/null -XPOST "127.0.0.1:$port/v1/customers" -H "x-api-key: $key" \
      -H 'content-type: application/json' -d "{\"id\":\"cust-$c\"}"
  done
  echo "# ingest, closed loop, batches of 1000, 16 connections"
  "$build/bench/tally_loadgen" --port "$port" --mode ingest --key "$key" --batch 1000 \
    --connections 16 --duration-s "${DURATION:-15}"
  rps=$(("${INGEST_RATE:-150}"))
  echo "# ingest, open loop at $rps batches/s"
  "$build/bench/tally_loadgen" --port "$port" --mode ingest --key "$key" --batch 1000 \
    --connections 32 --rate "$rps" --duration-s "${DURATION:-15}"
  echo "# usage query of one customer-month, open loop 2000/s"
  "$build/bench/tally_loadgen" --port "$port" --mode get --path /v1/customers/cust-1/usage \
    --key "$key" --connections 32 --rate 2000 --duration-s 10
  echo "# memory: RSS of the server (kB) and its stats"
  grep VmRSS "/proc/$tally_pid/status"
  curl -s "127.0.0.1:$port/metrics" | grep -E "^tally_(aggregates_live|events_accepted_total|store_bytes|customers) " || true
  stop_tally
fi

if [ "$what" = pricing ] || [ "$what" = all ]; then
  # The same closed-loop ingest without and with prices (every event priced on two meters and
  # burned from its customer's wallet), alternated twice so drift on a shared machine shows.
  prices='
[credits]
per_currency_unit = 1000
[[prices]]
meter = "tokens_in"
match = { provider = "OPENAI", model = "gpt-4-turbo" }
unit_price = "0.00001"
[[prices]]
meter = "tokens_out"
match = { provider = "OPENAI", model = "gpt-4-turbo" }
unit_price = "0.00003"'
  for round in 1 2; do
    for variant in plain priced; do
      if [ "$variant" = priced ]; then start_tally "$prices"; else start_tally ""; fi
      for c in $(seq 0 99); do
        curl -s -o /dev/null -XPOST "127.0.0.1:$port/v1/customers" -H "x-api-key: $key" \
          -H 'content-type: application/json' -d "{\"id\":\"cust-$c\"}"
        curl -s -o /dev/null -XPOST "127.0.0.1:$port/v1/customers/cust-$c/wallet/transactions" \
          -H "x-api-key: $key" -H 'content-type: application/json' \
          -d '{"type":"top_up","amount":1000000000}'
      done
      echo "# ingest ($variant, round $round), closed loop, batches of 1000, 16 connections"
      "$build/bench/tally_loadgen" --port "$port" --mode ingest --key "$key" --batch 1000 \
        --connections 16 --duration-s "${DURATION:-10}"
      if [ "$variant" = priced ] && [ "$round" = 2 ]; then
        echo "# wallet balance read, open loop 2000/s"
        "$build/bench/tally_loadgen" --port "$port" --mode get --path /v1/customers/cust-1/wallet \
          --key "$key" --connections 32 --rate 2000 --duration-s 10
      fi
      stop_tally
    done
  done
fi

if [ "$what" = check ] || [ "$what" = all ]; then
  echo "# in-process Engine::check, one thread, in-memory store"
  "$build/bench/tally_check_bench" --checks 3000000
  echo "# in-process Engine::check, two threads (the commit thread is a third on the same cores)"
  "$build/bench/tally_check_bench" --checks 3000000 --threads 2
  start_tally ""
  for c in $(seq 0 99); do
    curl -s -o /dev/null -XPOST "127.0.0.1:$port/v1/customers" -H "x-api-key: $key" \
      -H 'content-type: application/json' -d "{\"id\":\"cust-$c\"}"
  done
  echo "# tally POST /v1/check, 32 connections"
  "$build/bench/tally_loadgen" --port "$port" --mode post --path /v1/check --key "$key" \
    --body '{"customer":"cust-7","meter":"api_calls","amount":1}' --connections 32 \
    --duration-s "${DURATION:-10}"
  stop_tally
  if command -v nginx >/dev/null; then
    mkdir -p "$tmp/nginx"
    nport=$((20000 + RANDOM % 20000))
    cat > "$tmp/nginx/nginx.conf" <<NGX
worker_processes ${TALLY_THREADS:-2};
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx;
  proxy_temp_path $tmp/nginx;
  fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx;
  scgi_temp_path $tmp/nginx;
  server {
    listen 127.0.0.1:$nport;
    location / { default_type application/json; return 200 '{"allowed":true}'; }
  }
}
NGX
    nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
    pids+=($!)
    sleep 0.5
    echo "# nginx fixed tiny response, 32 connections"
    "$build/bench/tally_loadgen" --port "$nport" --mode post --path /check \
      --body '{"customer":"cust-7","meter":"api_calls","amount":1}' --connections 32 \
      --duration-s "${DURATION:-10}"
  fi
  if command -v redis-server >/dev/null; then
    rport=$((20000 + RANDOM % 20000))
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$tmp" > "$tmp/redis.log" 2>&1 &
    pids+=($!)
    sleep 0.5
    echo "# redis-server + Lua check-and-increment, 32 connections"
    "$build/bench/tally_redis_bench" --port "$rport" --connections 32 --duration-s "${DURATION:-10}"
  fi
fi
