#!/usr/bin/env bash
# Runs the benchmarks of bench/README.md on this machine and prints one JSON line per figure.
# Usage: bash bench/run.sh [ingest|check|pricing|all|cluster]   (builds build/bench in release
# mode first). Starts its own tally, nginx and redis-server on loopback ports with temporary
# directories and stops them by process id. `cluster` (not part of `all`) also starts
# PostgreSQL 15 and a Redis Cluster (bench/README.md, "Cluster").
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
build=build/bench
cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALLY_BUILD_TESTS=OFF \
  -DTALLY_BUILD_BENCH=ON >/dev/null
if [ "$what" = cluster ]; then
  cmake --build "$build" --target tally tally_loadgen tally_redis_bench tally_pg_seed >/dev/null
else
  cmake --build "$build" >/dev/null
fi
tmp="$(mktemp -d /tmp/tally-bench-XXXXXX)"
pids=()
pg_data=""  # cluster: PostgreSQL's data directory, stopped by its postmaster.pid
cleanup() {
  if [ -n "$pg_data" ] && [ -s "$pg_data/postmaster.pid" ]; then
    # Fast shutdown, and wait for it: the directory goes only after the server has exited.
    local pm
    pm=$(head -1 "$pg_data/postmaster.pid")
    kill -INT "$pm" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pm" 2>/dev/null || break; sleep 0.1; done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export TALLY_ADMIN_KEY="bench-admin-key-0123456789abcdef"
key="$TALLY_ADMIN_KEY"

# The benchmark's configuration: the meters and a plan whose limits never deny.
bench_config() {  # $1 = file, $2 = HTTP threads, $3 = each limit's amount, $4 = extra TOML
  cat > "$1" <<TOML
[server]
threads = $2
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
  { meter = "api_calls", period = "day", amount = $3 },
  { meter = "api_calls", period = "minute", amount = $3 },
]
[enforcement]
default_plan = "bench"
$4
TOML
}

start_tally() {  # $1 = extra TOML
  bench_config "$tmp/tally.toml" "${TALLY_THREADS:-2}" 1000000000000 "$1"
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

if [ "$what" = cluster ]; then
  # The scale-out mode beside the embedded store and the seeds' designs, in one run, with the
  # same load generator: PostgreSQL 15 (fsync and synchronous_commit on), a Redis Cluster of 3
  # primaries without replicas, `tally migrate`, then per figure one JSON line labelled
  # "figure" (ingest and checks on 1 embedded node, 1 cluster node, 3 cluster nodes, two
  # what-ifs on one cluster node, then Redis+Lua, INSERT per event and COPY), each followed by
  # the CPU its parts used ("cpu:<figure>"), and a last line "targets" with issue #11's two.
  # PERF_DIR=DIR also records `perf record -a -g` during each tally figure there (which slows
  # them: take the figures from a run without it). PG_STATS=1 loads pg_stat_statements and
  # prints, after each cluster figure, where PostgreSQL's time went.
  dur="${DURATION:-8}"
  label() { sed -u "s/^{/{\"figure\":\"$1\",/" | tee -a "$tmp/figures.jsonl"; }
  free_port() {  # a loopback port that is free, and whose +10000 (Redis's cluster bus) is too
    local p
    while :; do
      p=$((20000 + RANDOM % 25000))
      (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
      (: <"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null && continue
      echo "$p"
      return
    done
  }
  # CPU of each part over a figure, for the capacity model (docs/cluster.md): clock ticks of
  # user + system time (children's included) of the given pids, and of the whole machine.
  hz=$(getconf CLK_TCK)
  ticks_of() {
    local sum=0 p f
    for p in "$@"; do
      [ -r "/proc/$p/stat" ] || continue
      read -ra f < <(sed 's/^.*) //' "/proc/$p/stat")
      sum=$((sum + f[11] + f[12] + f[13] + f[14]))
    done
    echo "$sum"
  }
  machine_ticks() {  # busy idle
    read -r _ u n sy i w irq sirq st _ < /proc/stat
    echo "$((u + n + sy + irq + sirq + st)) $((i + w))"
  }
  pg_pids() {
    local pm
    pm=$(head -1 "$pg_data/postmaster.pid")
    echo "$pm" $(pgrep -P "$pm")
  }
  cpu_start() {
    cpu_t0=$(date +%s.%N)
    cpu_n0=$(ticks_of "${node_pids[@]}")
    cpu_p0=$(ticks_of $(pg_pids))
    cpu_r0=$(ticks_of "${rc_pids[@]}")
    read -r cpu_b0 cpu_i0 < <(machine_ticks)
  }
  cpu_end() {  # $1 = figure
    local t1 n1 p1 r1 b1 i1
    t1=$(date +%s.%N)
    n1=$(ticks_of "${node_pids[@]}")
    p1=$(ticks_of $(pg_pids))
    r1=$(ticks_of "${rc_pids[@]}")
    read -r b1 i1 < <(machine_ticks)
    jq -nc --arg f "$1" --argjson s "$(awk "BEGIN { print $t1 - $cpu_t0 }")" --argjson hz "$hz" \
      --argjson n $((n1 - cpu_n0)) --argjson p $((p1 - cpu_p0)) --argjson r $((r1 - cpu_r0)) \
      --argjson b $((b1 - cpu_b0)) --argjson i $((i1 - cpu_i0)) \
      '{figure: ("cpu:" + $f), seconds: ($s * 100 | round / 100),
        tally_cores: ($n / $hz / $s * 100 | round / 100),
        postgres_cores: ($p / $hz / $s * 100 | round / 100),
        redis_cores: ($r / $hz / $s * 100 | round / 100),
        machine_busy_cores: ($b / $hz / $s * 100 | round / 100),
        machine_busy_share: ($b / ($b + $i) * 100 | round / 100)}' |
      tee -a "$tmp/figures.jsonl"
  }

  echo "# machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"

  # PostgreSQL 15 in $tmp/pg, as the postgres user when root (it refuses to run as root).
  pgbin=/usr/lib/postgresql/15/bin
  as=()
  mkdir -p "$tmp/pg"
  if [ "$(id -u)" = 0 ]; then
    chmod 755 "$tmp"
    chown postgres "$tmp/pg"
    as=(runuser -u postgres --)
  fi
  pg_data="$tmp/pg/data"
  "${as[@]}" "$pgbin/initdb" -D "$pg_data" -U tally --auth=trust -E UTF8 >"$tmp/pg/initdb.log"
  pg_port=$(free_port)
  pg_extra=()
  if [ -n "${PG_STATS:-}" ]; then
    pg_extra=(-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all)
  fi
  "${as[@]}" "$pgbin/postgres" -D "$pg_data" -p "$pg_port" -k "$tmp/pg" \
    -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c full_page_writes=on \
    -c max_connections=200 -c shared_buffers=512MB -c max_wal_size=8GB \
    -c checkpoint_timeout=30min "${pg_extra[@]}" >"$tmp/pg/server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
    sleep 0.1
  done
  psql -q -h 127.0.0.1 -p "$pg_port" -U tally -d postgres -c 'CREATE DATABASE tally'
  pg_url="postgresql://tally@127.0.0.1:$pg_port/tally"
  pg_stats() {  # $1 = figure: the statements that took PostgreSQL's time since the last call
    # (grouped by their text: a statement on a temporary table has a new id per transaction)
    [ -n "${PG_STATS:-}" ] || return 0
    psql -At -h 127.0.0.1 -p "$pg_port" -U tally -d tally -c "SELECT json_build_object('figure', \
'pg:$1', 'top', json_agg(s)) FROM (SELECT left(regexp_replace(query, '\s+', ' ', 'g'), 70) AS \
query, sum(calls) AS calls, round(sum(total_exec_time)) AS total_ms FROM pg_stat_statements \
GROUP BY 1 ORDER BY 3 DESC LIMIT 8) s" | jq -c .
    psql -Atq -h 127.0.0.1 -p "$pg_port" -U tally -d tally \
      -c 'SELECT pg_stat_statements_reset()' >/dev/null
  }
  echo "# postgres $("$pgbin/postgres" --version | awk '{print $3}') on $pg_port:" \
    "$(psql -At -h 127.0.0.1 -p "$pg_port" -U tally -d tally -c "SELECT string_agg(name || '=' \
|| setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', \
'wal_sync_method', 'shared_buffers', 'max_wal_size')")"

  # A Redis Cluster of 3 primaries, no replicas (on two cores a replica only takes CPU from the
  # primaries; the check path reads and writes primaries alone), no persistence, as the
  # redis+lua baseline's server.
  rc_ports=()
  rc_pids=()
  for i in 0 1 2; do
    p=$(free_port)
    rc_ports+=("$p")
    mkdir -p "$tmp/redis-$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "nodes-$p.conf" --dir "$tmp/redis-$p" --save '' --appendonly no \
      --cluster-node-timeout 5000 >"$tmp/redis-$p/log" 2>&1 &
    pids+=($!)
    rc_pids+=($!)
  done
  for p in "${rc_ports[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${rc_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$tmp/redis-create.log" 2>&1
  for p in "${rc_ports[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
  done
  echo "# redis $(redis-server --version | awk '{print $3}') cluster: ${rc_ports[*]}"

  redis_stats() {  # $1 = figure: the commands the cluster ran since the last call, per command
    local p
    for p in "${rc_ports[@]}"; do
      redis-cli -p "$p" info commandstats | tr -d '\r' | grep '^cmdstat_'
      redis-cli -p "$p" config resetstat >/dev/null
    done | sed -E 's/^cmdstat_([^:]*):calls=([0-9]+),usec=([0-9]+),.*/\1 \2 \3/' |
      jq -Rsc --arg f "$1" '[split("\n")[] | select(length > 0) | split(" ")
        | {c: .[0], calls: (.[1] | tonumber), usec: (.[2] | tonumber)}] | group_by(.c)
        | map({key: .[0].c, value: {calls: (map(.calls) | add), usec: (map(.usec) | add)}})
        | from_entries | {figure: ("redis:" + $f), commands: .}' | tee -a "$tmp/figures.jsonl"
  }

  # One configuration for every node; limits stay within the cluster's bound (1e9).
  write_config() {  # $1 = file, $2 = extra TOML, $3 = HTTP threads
    bench_config "$1" "${3:-${TALLY_THREADS:-2}}" 1000000000 "$2"
  }
  cluster_toml="[cluster]
postgres = \"$pg_url\"
redis = [\"127.0.0.1:${rc_ports[0]}\"]"
  write_config "$tmp/embedded.toml" ""
  # The nodes' own default for HTTP threads (0: eight per core on a cluster node).
  write_config "$tmp/cluster.toml" "$cluster_toml" 0
  write_config "$tmp/cluster-8-threads.toml" "$cluster_toml" 8
  "$build/tally" migrate --config "$tmp/cluster.toml"
  redis_stats setup >/dev/null
  if [ -n "${PG_STATS:-}" ]; then
    psql -Atq -h 127.0.0.1 -p "$pg_port" -U tally -d tally \
      -c 'CREATE EXTENSION pg_stat_statements' >/dev/null
  fi

  node_pids=()
  node_ports=()
  start_node() {  # $1 = name, $2 = config
    rm -rf "$tmp/$1-data" "$tmp/$1.port"
    "$build/tally" serve --config "$2" --data "$tmp/$1-data" --listen 127.0.0.1:0 \
      --port-file "$tmp/$1.port" >"$tmp/$1.log" 2>&1 &
    pids+=($!)
    node_pids+=($!)
    for _ in $(seq 100); do [ -s "$tmp/$1.port" ] && break; sleep 0.1; done
    if [ ! -s "$tmp/$1.port" ]; then
      echo "node $1 did not start:" >&2
      cat "$tmp/$1.log" >&2
      exit 1
    fi
    node_ports+=("$(cat "$tmp/$1.port")")
  }
  stop_nodes() {
    for p in "${node_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
    node_pids=()
    node_ports=()
  }
  create_customers() {  # through node $1's port
    for c in $(seq 0 99); do
      curl -s -o /dev/null -XPOST "127.0.0.1:$1/v1/customers" -H "x-api-key: $key" \
        -H 'content-type: application/json' -d "{\"id\":\"cust-$c\"}"
    done
  }
  profile() {  # $1 = figure: perf record of the whole machine (read it by --comm or --pid)
    if [ -n "${PERF_DIR:-}" ]; then
      mkdir -p "$PERF_DIR"
      echo "# perf: $PERF_DIR/$1.data, tally pids ${node_pids[*]}"
      perf record -q -a -F 499 -g -o "$PERF_DIR/$1.data" -- sleep $((dur - 2)) >/dev/null 2>&1 &
    fi
  }
  ingest() {  # $1 = figure, $2 = events per request; the nodes' ports spread the connections
    profile "$1"
    cpu_start
    "$build/bench/tally_loadgen" --ports "$(IFS=,; echo "${node_ports[*]}")" --mode ingest \
      --key "$key" --batch "${2:-1000}" --connections 16 --duration-s "$dur" | label "$1"
    cpu_end "$1"
    pg_stats "$1"
  }
  checks() {
    profile "$1"
    cpu_start
    "$build/bench/tally_loadgen" --ports "$(IFS=,; echo "${node_ports[*]}")" --mode post \
      --path /v1/check --key "$key" --connections 32 --duration-s "$dur" \
      --body '{"customer":"{customer}","meter":"api_calls","amount":1}' | label "$1"
    cpu_end "$1"
    pg_stats "$1"
    redis_stats "$1"
  }

  echo "# ingest: closed loop, batches of 1000 (100 customers), 16 connections; checks: POST" \
    "/v1/check of cust-<connection mod 100>, 32 connections; ${dur} s each; one loadgen thread"
  start_node embedded "$tmp/embedded.toml"
  create_customers "${node_ports[0]}"
  ingest embedded-1-node-ingest
  checks embedded-1-node-check
  stop_nodes

  start_node node1 "$tmp/cluster.toml"
  create_customers "${node_ports[0]}"
  ingest cluster-1-node-ingest
  checks cluster-1-node-check
  start_node node2 "$tmp/cluster.toml"
  start_node node3 "$tmp/cluster.toml"
  ingest cluster-3-nodes-ingest
  checks cluster-3-nodes-check
  stop_nodes
  # Two what-ifs on one node, to show what limits the figures above (bench/README.md): ten
  # times the events per request (the same aggregate rows per transaction), and 8 HTTP threads
  # (more checks in flight while each waits on PostgreSQL and Redis).
  start_node node4 "$tmp/cluster.toml"
  ingest cluster-1-node-ingest-batch-10000 10000
  stop_nodes
  start_node node5 "$tmp/cluster-8-threads.toml"
  checks cluster-1-node-check-8-threads
  stop_nodes
  # Leased checks (docs/cluster.md, "Leased checks"): each node takes 1,000 of a customer's
  # limits at once and answers from them without a Redis round trip.
  write_config "$tmp/cluster-leased.toml" "$cluster_toml
check_lease = 1000" 0
  start_node node6 "$tmp/cluster-leased.toml"
  checks cluster-1-node-check-leased
  start_node node7 "$tmp/cluster-leased.toml"
  start_node node8 "$tmp/cluster-leased.toml"
  checks cluster-3-nodes-check-leased
  stop_nodes
  # What-if: a leased node with 2 HTTP threads (its checks no longer wait on Redis).
  write_config "$tmp/cluster-leased-2-threads.toml" "$cluster_toml
check_lease = 1000" 2
  start_node node9 "$tmp/cluster-leased-2-threads.toml"
  checks cluster-1-node-check-leased-2-threads
  stop_nodes
  echo "# postgres after the cluster figures: $(psql -At -h 127.0.0.1 -p "$pg_port" -U tally \
    -d tally -c "SELECT count(*) || ' events, ' || (SELECT count(*) FROM aggregates_minute) \
|| ' minute aggregates, ' || pg_size_pretty(pg_database_size('tally')) FROM events")"

  # The seeds' designs: a Lua check-and-increment on one standalone Redis, and PostgreSQL
  # written one INSERT per event or by COPY (bench/pg_seed.cc).
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$tmp" >"$tmp/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  rc_pids=($!)  # from here redis_cores and redis_stats are this one server's
  rc_ports=("$rport")
  cpu_start
  "$build/bench/tally_redis_bench" --port "$rport" --connections 32 --duration-s "$dur" |
    label seed-redis-lua-check
  cpu_end seed-redis-lua-check
  redis_stats seed-redis-lua-check
  cpu_start
  "$build/bench/tally_pg_seed" --conninfo "$pg_url" --mode insert --connections 16 \
    --duration-s "$dur" | label seed-pg-insert-per-event
  cpu_end seed-pg-insert-per-event
  cpu_start
  "$build/bench/tally_pg_seed" --conninfo "$pg_url" --mode copy --batch 1000 --connections 16 \
    --duration-s "$dur" | label seed-pg-copy
  cpu_end seed-pg-copy
  echo "# load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  # The issue's two targets, from this run's figures.
  jq -sc 'map({(.figure): .}) | add | {figure: "targets",
    cluster_ingest_events_per_s_1_node: (.["cluster-1-node-ingest"].events_per_s | round),
    cluster_ingest_events_per_s_3_nodes: (.["cluster-3-nodes-ingest"].events_per_s | round),
    ingest_target: 100000,
    redis_lua_checks_per_s: .["seed-redis-lua-check"].rps,
    cluster_check_ratio_1_node: (.["cluster-1-node-check"].requests_per_s
      / .["seed-redis-lua-check"].rps * 100 | round / 100),
    cluster_check_ratio_3_nodes: (.["cluster-3-nodes-check"].requests_per_s
      / .["seed-redis-lua-check"].rps * 100 | round / 100),
    cluster_check_ratio_leased_1_node: (.["cluster-1-node-check-leased"].requests_per_s
      / .["seed-redis-lua-check"].rps * 100 | round / 100),
    cluster_check_ratio_leased_3_nodes: (.["cluster-3-nodes-check-leased"].requests_per_s
      / .["seed-redis-lua-check"].rps * 100 | round / 100),
    check_ratio_target: 0.8,
    events_per_postgres_core_s_1_node: (.["cluster-1-node-ingest"].events_per_s
      / .["cpu:cluster-1-node-ingest"].postgres_cores | round),
    events_per_postgres_core_s_3_nodes: (.["cluster-3-nodes-ingest"].events_per_s
      / .["cpu:cluster-3-nodes-ingest"].postgres_cores | round),
    events_per_tally_core_s_1_node: (.["cluster-1-node-ingest"].events_per_s
      / .["cpu:cluster-1-node-ingest"].tally_cores | round),
    checks_per_redis_core_s_1_node: (.["cluster-1-node-check"].requests_per_s
      / .["cpu:cluster-1-node-check"].redis_cores | round),
    checks_per_redis_core_s_3_nodes: (.["cluster-3-nodes-check"].requests_per_s
      / .["cpu:cluster-3-nodes-check"].redis_cores | round),
    checks_per_tally_core_s_1_node: (.["cluster-1-node-check"].requests_per_s
      / .["cpu:cluster-1-node-check"].tally_cores | round)}' "$tmp/figures.jsonl"
fi
