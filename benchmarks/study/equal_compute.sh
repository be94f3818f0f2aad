#!/bin/bash
# The end-to-end study at equal compute (BENCHMARKS.md §4d). Same source, shots, seeds, meta-val and
# meta-test tasks as run.sh, so every cell pairs with the study's cells on identical test tasks.
#   * the look-ahead (alg2) rows, each at its selected α, with only the meta-steps MAML's
#     100-step run costs (MAML: 142 CPU-s; an alg2 meta-step: 3.5-3.8× MAML's → 28 meta-steps);
#   * MAML at its selected α (0.03) with the CPU of an alg2 row's 100 steps (355 meta-steps,
#     validated every 71: its meta-val curve past 300 meta-steps).
# Rows in order of what they answer: GWNMO at MAML's budget, MAML at GWNMO's, then MAML alg2 at
# MAML's budget (the objective at equal compute).
# One process (one core). Resumable. Report: benchmarks/study/report.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
common=(benchmark protocol --adapt all --skip-integrity-check --sources mixed --shots 1
    --seeds 0,1,2 --schedules alg2 --lr-values 1 --meta-steps 28 --val-tasks 50 --test-tasks 150
    --quiet --regimes learned --out benchmarks/study/equal-compute-1shot)
maml_alg2='maml alg2=maml:schedule=alg2,inner_lr=0.1'
maml_long='maml 355 steps=maml:inner_lr=0.03,meta_steps=355,val_every=71'
$GWNMO "${common[@]}" --methods gwnmo --variants "$maml_long;$maml_alg2" "$@"
