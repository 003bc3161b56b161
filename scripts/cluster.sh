#!/usr/bin/env bash
# Three Tally nodes in cluster mode on this machine (docs/cluster.md, "Three nodes on one machine"):
# one PostgreSQL 15, a Redis Cluster of 3 primaries + 3 replicas, and three `tally serve` nodes
# over them, all on loopback ports, in temporary directories.
#
#   scripts/cluster.sh [--tally PATH] [--http-port P] [--redis-port P] [--pg-port P]
#       starts everything, prints how to reach it, and stays in the foreground; Ctrl-C stops
#       everything and removes the directories.
#   scripts/cluster.sh stop
#       stops a cluster started by this script from another terminal (the same as its Ctrl-C).
#
# Contract:
# - Every process it starts is recorded (name, pid, start time) in <state>/pids and stopped by
#   that pid, never by name, and only while that pid is still the process started then: tally nodes with SIGTERM (SIGKILL after 10 s), Redis with SIGKILL (it keeps no
#   data here), PostgreSQL with `pg_ctl stop -m fast` (which signals the pid in postmaster.pid).
# - The state directory is /tmp/tally-cluster.XXXXXX; ${TMPDIR:-/tmp}/tally-cluster.current names
#   the running one, so `stop` finds it. PostgreSQL's data directory is a second temporary
#   directory owned by `postgres` when this runs as root (PostgreSQL refuses to run as root;
#   the programs then run under `runuser -u postgres --`, as tests/support/pg_server.cc does).
# - Ports: nodes on --http-port .. +2 (default 8081-8083), Redis on --redis-port .. +5 (default
#   7000-7005, and their cluster bus ports + 10000), PostgreSQL on --pg-port (default 55432).
#   A port in use is reported and nothing is started.
# - Without --tally, builds `tally` in build/release as scripts/start.sh does (Release, no tests)
#   and uses build/release/tally.
# - The admin key is TALLY_ADMIN_KEY when set, else a random one printed at start.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$(pwd)"

current_file="${TMPDIR:-/tmp}/tally-cluster.current"
pg_bin=/usr/lib/postgresql/15/bin
nodes=3
redis_nodes=6

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  echo "cluster.sh: $*" >&2
  exit 2
}

# --- stopping -----------------------------------------------------------------------------------

# The start time of process $1 (field 22 of /proc/PID/stat, after the command name, which may
# hold spaces), or "" when there is no such process.
start_time() {
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $20 }'
}

# Whether pid $1 is still the process that was started at time $2: a pid may be reused by
# another process once its own has ended, and that one must never be signalled.
pid_runs() {
  local pid="$1" started="$2"
  [ -n "$pid" ] && [ -n "$started" ] && [ "$(start_time "$pid")" = "$started" ]
}

# Waits up to $2 tenths of a second for pid $1 to end.
wait_gone() {
  local pid="$1" tenths="$2" i
  for ((i = 0; i < tenths; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# Stops everything recorded in state directory $1 and removes it and PostgreSQL's directory.
stop_all() {
  local state="$1" name pid started
  [ -d "$state" ] || return 0
  if [ -f "$state/pids" ]; then
    # Tally nodes first (they finish in-flight requests), then Redis, then PostgreSQL.
    while read -r name pid started; do
      case "$name" in
        node*)
          if pid_runs "$pid" "$started"; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" 100 || kill -KILL "$pid" 2>/dev/null || true
          fi
          ;;
      esac
    done <"$state/pids"
    while read -r name pid started; do
      case "$name" in
        redis*)
          if pid_runs "$pid" "$started"; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 50 || true
          fi
          ;;
      esac
    done <"$state/pids"
  fi
  if [ -f "$state/pg_dir" ]; then
    local pg_dir
    pg_dir="$(cat "$state/pg_dir")"
    if [ -f "$pg_dir/data/postmaster.pid" ]; then
      as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w -t 20 stop >/dev/null 2>&1 || {
        pid="$(head -n 1 "$pg_dir/data/postmaster.pid" 2>/dev/null || true)"
        if [ -n "$pid" ]; then
          kill -KILL "$pid" 2>/dev/null || true
        fi
      }
    fi
    case "$pg_dir" in /tmp/tally-cluster-pg.*) rm -rf "$pg_dir" ;; esac
  fi
  case "$state" in /tmp/tally-cluster.*) rm -rf "$state" ;; esac
  if [ -f "$current_file" ] && [ "$(cat "$current_file")" = "$state" ]; then
    rm -f "$current_file"
  fi
}

# Runs a PostgreSQL program: as is, or as `postgres` when root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [ "${1:-}" = "stop" ]; then
  [ -f "$current_file" ] || die "no cluster is running ($current_file is missing)"
  state="$(cat "$current_file")"
  read -r owner owner_started <"$state/owner" 2>/dev/null || true
  if pid_runs "${owner:-}" "${owner_started:-}"; then
    # The foreground script stops everything in its trap; wait for it.
    kill -TERM "$owner"
    wait_gone "$owner" 400 || die "the script (pid $owner) did not stop within 40 s"
  else
    stop_all "$state"
  fi
  echo "stopped"
  exit 0
fi

# --- options ------------------------------------------------------------------------------------

tally=""
http_port=8081
redis_port=7000
pg_port=55432
while [ $# -gt 0 ]; do
  case "$1" in
    --tally) tally="${2:?--tally needs a path}"; shift 2 ;;
    --http-port) http_port="${2:?--http-port needs a port}"; shift 2 ;;
    --redis-port) redis_port="${2:?--redis-port needs a port}"; shift 2 ;;
    --pg-port) pg_port="${2:?--pg-port needs a port}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

for program in "$pg_bin/initdb" "$pg_bin/pg_ctl" "$pg_bin/psql"; do
  [ -x "$program" ] || die "$program is missing: run scripts/setup.sh (Debian's postgresql)"
done
command -v redis-server >/dev/null || die "redis-server is missing: run scripts/setup.sh"
command -v redis-cli >/dev/null || die "redis-cli is missing: run scripts/setup.sh (redis-tools)"
if [ "$(id -u)" = 0 ]; then
  command -v runuser >/dev/null || die "PostgreSQL refuses to run as root, and runuser is missing"
  id postgres >/dev/null 2>&1 || die "PostgreSQL refuses to run as root, and there is no postgres user"
fi
if [ -f "$current_file" ] && [ -d "$(cat "$current_file")" ]; then
  die "a cluster is already running ($(cat "$current_file")); stop it first: $0 stop"
fi

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
ports=("$pg_port")
for ((i = 0; i < nodes; i++)); do ports+=($((http_port + i))); done
for ((i = 0; i < redis_nodes; i++)); do ports+=($((redis_port + i)) $((redis_port + i + 10000))); done
for p in "${ports[@]}"; do
  if port_in_use "$p"; then
    die "port $p is in use; choose others with --http-port, --redis-port or --pg-port"
  fi
done

if [ -z "$tally" ]; then
  build=build/release
  echo "Building tally in $build (as scripts/start.sh does; --tally PATH skips this) ..."
  cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALLY_BUILD_TESTS=OFF \
    -DTALLY_BUILD_BENCH=OFF >/dev/null
  cmake --build "$build" --target tally
  tally="$root_dir/$build/tally"
fi
[ -x "$tally" ] || die "$tally is not an executable"
tally="$(cd "$(dirname "$tally")" && pwd)/$(basename "$tally")"

if [ -z "${TALLY_ADMIN_KEY:-}" ]; then
  TALLY_ADMIN_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
export TALLY_ADMIN_KEY

# --- starting -----------------------------------------------------------------------------------

state="$(mktemp -d /tmp/tally-cluster.XXXXXX)"
echo "$state" >"$current_file"
echo "$$ $(start_time $$)" >"$state/owner"
: >"$state/pids"
stopping=0
on_exit() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo
  echo "Stopping the cluster ..."
  stop_all "$state"
  echo "stopped"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

record() {  # name pid: the pid and its start time
  echo "$1 $2 $(start_time "$2")" >>"$state/pids"
}

# PostgreSQL: initdb with a trusted superuser `tally`, on loopback only.
pg_dir="$(mktemp -d /tmp/tally-cluster-pg.XXXXXX)"
echo "$pg_dir" >"$state/pg_dir"
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$pg_dir"
fi
echo "Starting PostgreSQL 15 on 127.0.0.1:$pg_port ..."
LC_ALL=C as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U tally --auth=trust -E UTF8 --locale=C \
  --no-sync --no-instructions >"$state/initdb.log" 2>&1 ||
  die "initdb failed: $(cat "$state/initdb.log")"
LC_ALL=C as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=100" start \
  >/dev/null || die "PostgreSQL did not start: $(cat "$pg_dir/postgres.log" 2>/dev/null)"
record postgres "$(head -n 1 "$pg_dir/data/postmaster.pid")"
pg_conn="host=127.0.0.1 port=$pg_port user=tally dbname=tally"
"$pg_bin/psql" -X -q -d "host=127.0.0.1 port=$pg_port user=tally dbname=postgres" \
  -c "CREATE DATABASE tally" >/dev/null

# Redis Cluster: six nodes, three primaries with one replica each.
echo "Starting a Redis Cluster on 127.0.0.1:$redis_port-$((redis_port + redis_nodes - 1)) ..."
redis_server="$(command -v redis-server)"
endpoints=()
for ((i = 0; i < redis_nodes; i++)); do
  p=$((redis_port + i))
  "$redis_server" --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "nodes-$p.conf" --dir "$state" --save '' --appendonly no \
    --cluster-node-timeout 2000 --logfile "$state/redis-$p.log" --daemonize no &
  record "redis$p" "$!"
  disown "$!"  # stopped by pid in stop_all; no "Killed" notice from this shell
  endpoints+=("127.0.0.1:$p")
done
for p in $(seq "$redis_port" $((redis_port + redis_nodes - 1))); do
  for _ in $(seq 100); do
    redis-cli -p "$p" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done
redis-cli --cluster create "${endpoints[@]}" --cluster-replicas 1 --cluster-yes \
  >"$state/cluster-create.log" 2>&1 ||
  die "redis-cli --cluster create failed: $(cat "$state/cluster-create.log")"
for p in $(seq "$redis_port" $((redis_port + redis_nodes - 1))); do
  for i in $(seq 200); do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
    [ "$i" = 200 ] && die "Redis node $p did not reach cluster_state:ok"
    sleep 0.1
  done
done

# The nodes' configuration: two meters and a plan with a day limit (docs/configuration.md).
redis_seeds="\"127.0.0.1:$redis_port\", \"127.0.0.1:$((redis_port + 1))\", \"127.0.0.1:$((redis_port + 2))\""
cat >"$state/tally.toml" <<TOML
# Generated by scripts/cluster.sh: three nodes share this file.
[server]
auto_create_customers = true

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]
unit = "calls"

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "\$.input_tokens"
group_by = ["provider", "model"]
unit = "tokens"

[enforcement]
default_plan = "starter"

[[plans]]
key = "starter"
name = "Starter"
limits = [
  { meter = "api_calls", period = "day", amount = 1000 },
  { meter = "tokens_in", period = "day", amount = 1000000 },
]

[cluster]
postgres = "$pg_conn"
redis = [$redis_seeds]
TOML

echo "Creating the schema (tally migrate) ..."
"$tally" migrate --config "$state/tally.toml" | sed 's/^/  /'

echo "Starting $nodes tally nodes ..."
for ((i = 0; i < nodes; i++)); do
  p=$((http_port + i))
  mkdir -p "$state/node$i"
  "$tally" serve --config "$state/tally.toml" --data "$state/node$i/data" \
    --listen "127.0.0.1:$p" --port-file "$state/node$i/port" >"$state/node$i/tally.log" 2>&1 &
  record "node$i" "$!"
  disown "$!"
done
for ((i = 0; i < nodes; i++)); do
  for j in $(seq 300); do
    [ -s "$state/node$i/port" ] && break
    pid="$(awk -v n="node$i" '$1 == n { print $2 }' "$state/pids")"
    kill -0 "$pid" 2>/dev/null || die "node $i exited: $(tail -n 20 "$state/node$i/tally.log")"
    [ "$j" = 300 ] && die "node $i did not start within 30 s: $(tail -n 20 "$state/node$i/tally.log")"
    sleep 0.1
  done
done

cat <<INFO

Three Tally nodes in cluster mode are running:
$(for ((i = 0; i < nodes; i++)); do
  echo "  node$i  http://127.0.0.1:$((http_port + i))   pid $(awk -v n="node$i" '$1 == n { print $2 }' "$state/pids")   log $state/node$i/tally.log"
done)
PostgreSQL:     $pg_conn   (psql "$pg_conn")
Redis Cluster:  ${endpoints[*]}
Configuration:  $state/tally.toml
Admin key:      $TALLY_ADMIN_KEY

Try:
  curl -s -H "x-api-key: $TALLY_ADMIN_KEY" -H 'Content-Type: application/json' \\
    http://127.0.0.1:$http_port/v1/events -d '{"id":"e1","customer":"acme","type":"api_call"}'
  curl -s -H "x-api-key: $TALLY_ADMIN_KEY" http://127.0.0.1:$((http_port + 1))/v1/customers/acme/usage
  curl -s -H "x-api-key: $TALLY_ADMIN_KEY" -H 'Content-Type: application/json' \\
    http://127.0.0.1:$((http_port + 2))/v1/check -d '{"customer":"acme","meter":"api_calls"}'
Stop with Ctrl-C here, or: $0 stop

INFO

# Stay in the foreground; say so when a node ends (kill -9 one to watch the others carry on).
declare -A reported
while [ -f "$state/pids" ]; do
  while read -r name pid _; do
    case "$name" in
      node*)
        if [ -z "${reported[$name]:-}" ] && ! kill -0 "$pid" 2>/dev/null; then
          echo "$name (pid $pid) has exited; the other nodes keep serving"
          reported[$name]=1
        fi
        ;;
    esac
  done <"$state/pids"
  sleep 1 &
  wait $! || true
done
