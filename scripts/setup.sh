#!/usr/bin/env bash
# Installs what Tally needs from Debian 12's packages, and nothing when it is all there.
# Safe to run again. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git curl ca-certificates tzdata
  libboost-dev libboost-system-dev libsimdjson-dev librocksdb-dev libssl-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev libhowardhinnant-date-dev
  libzstd-dev libxlsxwriter-dev libgtest-dev libgmock-dev libbenchmark-dev
  # The Redis Cluster client layer (src/redis) is built on hiredis, the PostgreSQL layer
  # (src/pg) on libpq.
  libhiredis-dev libpq-dev
  # PostgreSQL 15's server programs (/usr/lib/postgresql/15/bin: initdb, postgres), which the
  # src/pg and `tally migrate` tests run as children on loopback (tests/support/pg_server.h),
  # never as the system service; the package also creates the `postgres` user they run as.
  postgresql
  # Run by the tests and benchmarks as plain child processes on loopback, never as services:
  # nginx in front of `tally serve` (auth_request, tests/nginx_test.cc) and as the HTTP
  # baseline, redis-server for the Redis+Lua comparison in bench/ and, with redis-tools'
  # redis-cli (`--cluster create`), the real Redis Clusters of the src/redis tests.
  nginx redis-server redis-tools
  # The export tests open the XLSX workbooks they get to read their rows; the archive tests
  # read archives with the zstd command, as an operator would.
  unzip zstd
  # promtool checks /metrics and the alerting rules (docs/prometheus); the package also holds
  # the Prometheus server, whose service is stopped below like nginx's.
  prometheus
  # A local SMTP sink for the email alert tests (tests/support/smtp_sink.py), run by
  # /usr/bin/python3 as a child of the test.
  python3-aiosmtpd
  # The libFuzzer targets (tests/fuzz, scripts/fuzz.sh) build with clang 14 and its runtimes;
  # the suite checks the sources' format with clang-format 14 (scripts/format.sh --check).
  clang-14 libfuzzer-14-dev libclang-rt-14-dev clang-format-14
  # The dashboard embeds Chart.js from Debian's package at build time (web/dashboard).
  libjs-chart.js
)
# The dashboard's browser test (tests/clients/dashboard.test.mjs) drives Debian's Chromium
# headless; playwright-core never downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  packages+=(chromium)
fi
# The client tests (tests/clients) run the official npm clients of other systems with Node.js;
# Debian's own is taken when the machine has no node at all.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

# Debian's postinst scripts start nginx, redis-server, prometheus (on :9090) and a "main"
# PostgreSQL cluster (on :5432) as system services (where policy-rc.d allows it, not in most
# containers). Tally runs nginx, redis and PostgreSQL only as children of a test and needs only
# promtool of prometheus, so a service started by the install is stopped (by the pid in its pid
# file, never by name) and disabled at boot.
stop_service() {
  local name=$1 pid_file=$2 pid
  if [ -r "$pid_file" ]; then
    pid=$(cat "$pid_file" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ]; then
      echo "setup: stopping the $name service the package started (pid $pid)"
      "${sudo_cmd[@]}" kill -TERM "$pid" || true
    fi
  fi
  if command -v systemctl >/dev/null 2>&1; then
    "${sudo_cmd[@]}" systemctl disable "$name" >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1; then
    "${sudo_cmd[@]}" update-rc.d "$name" disable >/dev/null 2>&1 || true
  fi
}

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

for p in "${missing[@]}"; do
  case "$p" in
    nginx) stop_service nginx /run/nginx.pid ;;
    redis-server) stop_service redis-server /run/redis/redis-server.pid ;;
    prometheus) stop_service prometheus /run/prometheus/prometheus.pid ;;
    # The cluster the postinst created (pg_createcluster 15 main): its postmaster.pid's first
    # line is the server's pid. The cluster's files stay; nothing of Tally uses them.
    postgresql)
      stop_service postgresql /var/lib/postgresql/15/main/postmaster.pid
      if [ -r /etc/postgresql/15/main/start.conf ]; then
        echo manual | "${sudo_cmd[@]}" tee /etc/postgresql/15/main/start.conf >/dev/null
      fi
      ;;
  esac
done
