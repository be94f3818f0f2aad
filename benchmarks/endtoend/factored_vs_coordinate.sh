#!/bin/bash
# Issue 15: does the factored M (per output unit) lose accuracy against the per-coordinate M at the
# real target sizes? Paired on the same meta-test tasks (protocol suite, class-disjoint `mixed`,
# 5-way 1-shot, learned init, seed 0, 100 meta-steps, each M at the method's default step size):
#   - the 134,149-parameter head (256→512→5) on cached conv4 features, default schedule alg2;
#   - conv4 end to end (--adapt all), schedule unrolled (the per-coordinate M's alg2 costs ~10 s
#     a meta-step here).
# Resumable. The linear-head check is benchmarks/factored_accuracy.py (MNIST, committed JSON).
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
common=(benchmark protocol --skip-integrity-check --sources mixed --shots 1 --regimes learned
    --seeds 0 --methods gwnmo --weighting factored --lr-values 1 --meta-steps 100
    --val-tasks 50 --test-tasks 600 --quiet)
nice -n 10 $GWNMO "${common[@]}" --head-hidden 512 --schedules alg2 \
    --variants 'gwnmo alg2 coordinate M=gwnmo:schedule=alg2,weighting=coordinate' \
    --out benchmarks/endtoend/factored-134k "$@"
nice -n 10 $GWNMO "${common[@]}" --adapt all --conv-bias --schedules unrolled \
    --variants 'gwnmo unrolled coordinate M=gwnmo:schedule=unrolled,weighting=coordinate' \
    --out benchmarks/endtoend/factored-conv4 "$@"
