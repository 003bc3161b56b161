#!/usr/bin/env bash
# Checks the include layering of src/ (src/README.md): a file of one layer may include headers
# of its own layer, of the layers below it (the transitive closure of the arrows in
# src/README.md), and the public headers in include/tally; never a header of a higher layer or of
# a sibling it does not depend on. The public headers (include/tally) include only the standard
# library and each other, hiredis is included only by the .cc files of src/redis and libpq only
# by the .cc files of src/pg (never by a header, so no other layer sees them). Prints one line per offending include and exits 1 when
# there is any.
#
#   scripts/layering.sh [ROOT]      check the tree at ROOT (default: this checkout)
#   scripts/layering.sh --self-test check that a planted violation is caught (run by ctest)
set -euo pipefail

# Each layer and the layers it links to directly, as drawn in src/README.md.
declare -A deps=(
  [cli]="webhook http export engine pg"
  [webhook]="http notify engine"
  [notify]="engine"
  [http]="dashboard export engine"
  [dashboard]="common"
  [export]="engine"
  [engine]="store config cluster"
  [cluster]="pg redis config"
  [redis]="common"
  [pg]="common"
  [config]="core"
  [store]="core"
  [core]="common"
  [common]=""
)

# The layers `$1` may include: itself and everything below it.
allowed_for() {
  local -A seen=()
  local stack=("$1") layer dep
  while ((${#stack[@]})); do
    layer=${stack[-1]}
    unset 'stack[-1]'
    [[ -n ${seen[$layer]:-} ]] && continue
    seen[$layer]=1
    for dep in ${deps[$layer]}; do
      stack+=("$dep")
    done
  done
  echo "${!seen[@]}"
}

check_tree() {
  local root=$1 failures=0 layer file line target allowed
  for layer in "${!deps[@]}"; do
    [[ -d $root/src/$layer ]] || continue
    allowed=" $(allowed_for "$layer") "
    while IFS= read -r hit; do
      file=${hit%%:*}
      line=${hit#*:}
      line=${line%%:*}
      # The first path component of the included header: "engine" in "engine/codec.h".
      target=$(sed -E 's/^[^:]*:[0-9]+:[[:space:]]*#[[:space:]]*include[[:space:]]*["<]([^/">]+)\/.*/\1/' <<<"$hit")
      [[ -n ${deps[$target]+x} ]] || continue  # not a layer: the standard library, a dependency
      if [[ $allowed != *" $target "* ]]; then
        echo "${file#"$root"/}:$line: layer '$layer' includes '$target' (it may include:$allowed)"
        failures=$((failures + 1))
      fi
    done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<][^/">]+/' \
      --include='*.h' --include='*.cc' "$root/src/$layer" || true)
  done
  # hiredis: only in src/redis/*.cc.
  while IFS= read -r hit; do
    file=${hit%%:*}
    case $file in
      "$root"/src/redis/*.cc) continue ;;
    esac
    line=${hit#*:}
    echo "${file#"$root"/}:${line%%:*}: includes hiredis, which only src/redis/*.cc may include"
    failures=$((failures + 1))
  done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<](hiredis/)?hiredis\.h' \
    --include='*.h' --include='*.cc' "$root/src" "$root/include" 2>/dev/null || true)
  # libpq: only in src/pg/*.cc.
  while IFS= read -r hit; do
    file=${hit%%:*}
    case $file in
      "$root"/src/pg/*.cc) continue ;;
    esac
    line=${hit#*:}
    echo "${file#"$root"/}:${line%%:*}: includes libpq, which only src/pg/*.cc may include"
    failures=$((failures + 1))
  done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<](postgresql/)?libpq-fe\.h' \
    --include='*.h' --include='*.cc' "$root/src" "$root/include" 2>/dev/null || true)
  # Public headers: the standard library and each other only.
  if [[ -d $root/include/tally ]]; then
    while IFS= read -r hit; do
      echo "${hit#"$root"/}: a public header includes something other than the standard library or tally/"
      failures=$((failures + 1))
    done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*(".*"|<[^>]*/[^>]*>)' \
      "$root/include/tally" | grep -vE '#[[:space:]]*include[[:space:]]*["<]tally/' || true)
  fi
  if ((failures > 0)); then
    echo "layering: $failures include(s) break the layering of src/README.md" >&2
    return 1
  fi
  echo "layering: ok"
}

self_test() {
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/src/core" "$tmp/src/engine" "$tmp/src/http" "$tmp/include/tally"
  printf '#include "common/assert.h"\n#include <vector>\n' >"$tmp/src/core/good.h"
  printf '#include "core/good.h"\n#include "config/config.h"\n#include <tally/status.h>\n' \
    >"$tmp/src/engine/good.cc"
  printf '#include "engine/good.h"\n#include "dashboard/assets.h"\n' >"$tmp/src/http/good.cc"
  printf '#include <string>\n#include "tally/status.h"\n' >"$tmp/include/tally/good.h"
  if ! check_tree "$tmp" >/dev/null; then
    echo "layering self-test: a tree that keeps the layering was refused" >&2
    return 1
  fi
  # A lower layer including a higher one: core -> engine.
  printf '#include "engine/codec.h"\n' >"$tmp/src/core/bad.cc"
  local out
  if out=$(check_tree "$tmp" 2>&1); then
    echo "layering self-test: core including engine was not caught" >&2
    return 1
  fi
  [[ $out == *"src/core/bad.cc:1: layer 'core' includes 'engine'"* ]] || {
    echo "layering self-test: unexpected report: $out" >&2
    return 1
  }
  rm "$tmp/src/core/bad.cc"
  # A sibling it does not depend on: engine -> http.
  printf '#include "http/json_util.h"\n' >"$tmp/src/engine/bad.h"
  if check_tree "$tmp" >/dev/null 2>&1; then
    echo "layering self-test: engine including http was not caught" >&2
    return 1
  fi
  rm "$tmp/src/engine/bad.h"
  # hiredis outside src/redis/*.cc: in a header of the redis layer, and in another layer.
  mkdir -p "$tmp/src/redis"
  printf '#include <hiredis/hiredis.h>\n' >"$tmp/src/redis/client.cc"
  if ! check_tree "$tmp" >/dev/null; then
    echo "layering self-test: hiredis in src/redis/client.cc was refused" >&2
    return 1
  fi
  printf '#include <hiredis/hiredis.h>\n' >"$tmp/src/redis/client.h"
  if check_tree "$tmp" >/dev/null 2>&1; then
    echo "layering self-test: hiredis in a header of src/redis was not caught" >&2
    return 1
  fi
  rm "$tmp/src/redis/client.h"
  printf '#include "hiredis.h"\n' >"$tmp/src/engine/counters.cc"
  if check_tree "$tmp" >/dev/null 2>&1; then
    echo "layering self-test: hiredis in src/engine was not caught" >&2
    return 1
  fi
  rm "$tmp/src/engine/counters.cc"
  # libpq outside src/pg/*.cc: in a header of the pg layer, and in another layer.
  mkdir -p "$tmp/src/pg"
  printf '#include <libpq-fe.h>\n' >"$tmp/src/pg/connection.cc"
  if ! check_tree "$tmp" >/dev/null; then
    echo "layering self-test: libpq in src/pg/connection.cc was refused" >&2
    return 1
  fi
  printf '#include <libpq-fe.h>\n' >"$tmp/src/pg/connection.h"
  if check_tree "$tmp" >/dev/null 2>&1; then
    echo "layering self-test: libpq in a header of src/pg was not caught" >&2
    return 1
  fi
  rm "$tmp/src/pg/connection.h"
  printf '#include "postgresql/libpq-fe.h"\n' >"$tmp/src/engine/rows.cc"
  if check_tree "$tmp" >/dev/null 2>&1; then
    echo "layering self-test: libpq in src/engine was not caught" >&2
    return 1
  fi
  rm "$tmp/src/engine/rows.cc"
  # A public header reaching into src/.
  printf '#include "engine/codec.h"\n' >"$tmp/include/tally/bad.h"
  if check_tree "$tmp" >/dev/null 2>&1; then
    echo "layering self-test: a public header including engine/ was not caught" >&2
    return 1
  fi
  echo "layering self-test: ok"
}

case "${1:-}" in
  --self-test) self_test ;;
  -h | --help) sed -n '2,9p' "$0" ;;
  *) check_tree "$(cd "${1:-$(dirname "$0")/..}" && pwd)" ;;
esac
