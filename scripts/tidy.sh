#!/usr/bin/env bash
# Runs clang-tidy 14 with the repository's .clang-tidy over C++ sources, using the
# compile_commands.json of a configured build (default build/test; TIDY_BUILD=DIR for another).
#
#   scripts/tidy.sh [FILES...]   check FILES (.cc; a header is checked through the files that
#                                include it); without FILES, the .cc files changed since main
#   scripts/tidy.sh --all        every .cc under src/
#
# Exits 1 when clang-tidy reports anything (its warnings are errors, see .clang-tidy), 2 when
# it cannot run. TIDY_JOBS=N runs N files at once (default 1: the machine's cores are shared).
set -euo pipefail
cd "$(dirname "$0")/.."

clang_tidy=${CLANG_TIDY:-clang-tidy-14}
build=${TIDY_BUILD:-build/test}
jobs=${TIDY_JOBS:-1}
if ! command -v "$clang_tidy" >/dev/null 2>&1; then
  echo "tidy: $clang_tidy not found (apt-get install clang-tidy-14)" >&2
  exit 2
fi
if [[ ! -f $build/compile_commands.json ]]; then
  echo "tidy: no $build/compile_commands.json; configure that build first (see README)" >&2
  exit 2
fi

if [[ ${1:-} == --all ]]; then
  mapfile -t files < <(git ls-files -- 'src/*.cc')
elif (($# > 0)); then
  files=("$@")
else
  base=$(git merge-base HEAD main 2>/dev/null || echo HEAD)
  mapfile -t files < <( (git diff --name-only --diff-filter=ACMR "$base" -- 'src/*.cc' 'tests/*.cc' \
    'bench/*.cc'; git ls-files --others --exclude-standard -- 'src/*.cc' 'tests/*.cc') | sort -u)
fi
if ((${#files[@]} == 0)); then
  echo "tidy: no files to check"
  exit 0
fi

if ! printf '%s\0' "${files[@]}" |
  xargs -0 -n 1 -P "$jobs" "$clang_tidy" -p "$build" --quiet \
  --extra-arg=-Wno-unknown-warning-option; then
  echo "tidy: clang-tidy found problems (above)" >&2
  exit 1
fi
echo "tidy: ${#files[@]} file(s) clean"
