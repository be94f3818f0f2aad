#!/usr/bin/env bash
# One-command, idempotent setup of gwnmo-meta in ./.venv (see README).
#
#   bash scripts/setup.sh            # create/refresh .venv with everything, project editable + dev extras
#
# A second run with unchanged inputs only checks a stamp and the imports (seconds).
# Environment knobs: PYTHON (interpreter, default python3), GWNMO_WHEEL_CACHE (where the
# learn2learn wheel built for this Python is cached, default ${XDG_CACHE_HOME:-~/.cache}/gwnmo-meta/wheels).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.gwnmo-setup-stamp"
INPUTS=(pyproject.toml requirements.txt scripts/setup.sh scripts/build_learn2learn.sh)
WANT="$(cat "${INPUTS[@]}" | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
   && "$VPY" -c "import gwnmo_meta.cli, learn2learn, higher" >/dev/null 2>&1; then
  echo "setup: .venv is up to date"
  exit 0
fi

if [[ ! -x "$VPY" ]]; then
  echo "setup: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VPY" -m pip --disable-pip-version-check -q)

echo "setup: torch, torchvision and the build tools"
"${PIP[@]}" install "torch==2.14.1" "torchvision==0.29.1" "setuptools>=68" wheel "cython>=3.0,<4"

echo "setup: learn2learn 0.2.0 (rebuilt for this Python with Cython 3)"
if ! "$VPY" -c "import learn2learn" >/dev/null 2>&1; then
  WHEEL="$(bash scripts/build_learn2learn.sh "$VPY")"
  "${PIP[@]}" install --no-deps "$WHEEL"
fi

echo "setup: runtime and dev requirements"
"${PIP[@]}" install -r requirements.txt
# --no-deps: learn2learn's own metadata asks for gsutil/qpth/cvxpy, which it does not need at import.
"${PIP[@]}" install --no-deps --no-build-isolation -e ".[dev]"

"$VPY" -c "import gwnmo_meta.cli, learn2learn, higher, typer, tensorboard" 2>/dev/null
echo "$WANT" > "$STAMP"
echo "setup: done ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"
