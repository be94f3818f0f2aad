#!/bin/bash
# GPU check, under 8 minutes on one GPU: (1) the test suite with the CUDA tests (tests marked
# `cuda` are skipped where torch sees no CUDA device); (2) the real-size speed table of
# BENCHMARKS.md §4 on CUDA (ratios, absolute times, peak memory); (3) a CUDA run of each schedule
# against the same run on the CPU (tests/test_cuda.py); (4) torchrun's nccl path, one process per
# GPU, on a tiny synthetic data root. Outputs go to ${OUT:-benchmarks/gpu}/. On a machine without
# CUDA it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=${OUT:-benchmarks/gpu}
[ -x "$PY" ] || { echo "gpu_check: $PY not found; run bash scripts/setup.sh first (or set PY)"; exit 2; }
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi
mkdir -p "$out"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s)')" | tee "$out/device.txt"
echo "== 1-3. the test suite, CUDA tests included"
"$PY" -m pytest -q -rs tests 2>&1 | tee "$out/tests.txt" | tail -5
echo "== 2. speed at real sizes on CUDA"
"$PY" benchmarks/bench_speed.py --only real-sizes --device cuda --repeats 10 --passes 2 --out "$out" | tail -25
echo "== 4. torchrun, nccl, one process per GPU"
root=$(mktemp -d)
"$PY" -c "import sys; sys.path.insert(0, 'tests'); from conftest import write_tiny_datasets; from pathlib import Path; write_tiny_datasets(Path('$root'))"
n=$("$PY" -c "import torch; print(torch.cuda.device_count())")
"$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" "$(dirname "$PY")/gwnmo-meta" meta-train \
    --data-root "$root" --backbone none --meta-batch "$((2 * n))" --meta-steps 4 --val-every 2 --val-tasks 8 \
    --query 3 --inner-steps 2 --test-tasks 8 --device cuda --quiet --out "$root/run" 2>&1 | tee "$out/torchrun.txt" | tail -3
echo "gpu_check: done; outputs in $out/"
