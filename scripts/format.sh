#!/usr/bin/env bash
# Formats C++ sources with clang-format 14 and the repository's .clang-format (pinned: other
# major versions format differently).
#
#   scripts/format.sh [FILES...]          format FILES in place (default: every .h/.cc under
#                                         include/ src/ tests/ bench/)
#   scripts/format.sh --check [FILES...]  change nothing; list the files that are not formatted
#                                         and exit 1 when there is any
set -euo pipefail
cd "$(dirname "$0")/.."

clang_format=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$clang_format" >/dev/null 2>&1; then
  echo "format: $clang_format not found (scripts/setup.sh installs clang-format-14)" >&2
  exit 2
fi

check=0
if [[ ${1:-} == --check ]]; then
  check=1
  shift
fi

files=("$@")
if ((${#files[@]} == 0)); then
  mapfile -t files < <(git ls-files -- 'include/*.h' 'src/*.h' 'src/*.cc' 'tests/*.h' 'tests/*.cc' \
    'bench/*.h' 'bench/*.cc')
fi

if ((check == 0)); then
  "$clang_format" -i --style=file "${files[@]}"
  exit 0
fi

unformatted=0
for f in "${files[@]}"; do
  if ! "$clang_format" --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "$f"
    unformatted=$((unformatted + 1))
  fi
done
if ((unformatted > 0)); then
  echo "format: $unformatted file(s) differ from clang-format 14 (scripts/format.sh FILE fixes one)" >&2
  exit 1
fi
