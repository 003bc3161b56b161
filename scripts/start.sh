#!/usr/bin/env bash
# Command (1): installs what is missing, builds Tally in release mode, and starts
# `tally serve` on the embedded store with examples/tally.toml on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

build=build/release
cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALLY_BUILD_TESTS=OFF \
  -DTALLY_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target tally

# The admin key: TALLY_ADMIN_KEY if set, else one generated once and kept in .tally-admin-key.
if [ -z "${TALLY_ADMIN_KEY:-}" ]; then
  if [ ! -s .tally-admin-key ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > .tally-admin-key)
  fi
  TALLY_ADMIN_KEY="$(cat .tally-admin-key)"
  export TALLY_ADMIN_KEY
fi

cat <<INFO

Tally is starting on http://127.0.0.1:8080 (data in ./data, config examples/tally.toml).
Admin key: ${TALLY_ADMIN_KEY}
Try:  curl -s http://127.0.0.1:8080/health
      curl -s -H "x-api-key: ${TALLY_ADMIN_KEY}" http://127.0.0.1:8080/v1/meters
Stop with Ctrl-C (SIGTERM finishes in-flight batches first).

INFO
exec "$build/tally" serve --config examples/tally.toml "$@"
