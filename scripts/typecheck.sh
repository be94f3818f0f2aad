#!/usr/bin/env bash
# Type-check gwnmo_meta as it installs: setuptools maps the repo's cli/ and tasks/ into the package
# as gwnmo_meta.cli / gwnmo_meta.tasks (pyproject.toml, package-dir), which mypy cannot follow, so
# the script assembles that layout in a temporary directory and runs mypy there, with the
# [tool.mypy] settings of pyproject.toml. Messages name the files in the repo (cli/app.py, ...).
#
#   bash scripts/typecheck.sh            # uses .venv/bin/python (scripts/setup.sh installs mypy)
#   VPY=/path/to/python bash scripts/typecheck.sh [MYPY OPTIONS]   (e.g. --disallow-untyped-defs)
#
# Exits non-zero when mypy reports an error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPY="${VPY:-$ROOT/.venv/bin/python}"
TREE="$(mktemp -d)"
trap 'rm -rf "$TREE"' EXIT

# gwnmo_meta/ without any cli/ or tasks/ links a checkout may hold, then the two mapped packages.
mkdir "$TREE/gwnmo_meta"
for entry in "$ROOT"/gwnmo_meta/*; do
  case "$(basename "$entry")" in
    cli | tasks | __pycache__) ;;
    *) cp -pR "$entry" "$TREE/gwnmo_meta/" ;;
  esac
done
cp -pR "$ROOT/cli" "$TREE/gwnmo_meta/cli"
cp -pR "$ROOT/tasks" "$TREE/gwnmo_meta/tasks"

cd "$TREE"
status=0
"$VPY" -m mypy --config-file "$ROOT/pyproject.toml" --cache-dir "$ROOT/.mypy_cache" \
  "$@" -p gwnmo_meta > "$TREE/out.txt" 2>&1 || status=$?
sed -e 's#^gwnmo_meta/cli/#cli/#' -e 's#^gwnmo_meta/tasks/#tasks/#' "$TREE/out.txt"
exit "$status"
