#!/bin/bash
# The end-to-end study at equal compute (BENCHMARKS.md §4d). Same settings as run.sh (settings.sh),
# so every cell pairs with the study's cells on identical test tasks.
#   * the look-ahead (alg2) rows, each at its selected α, with only the meta-steps MAML's
#     100-step run costs (MAML: 142 CPU-s; an alg2 meta-step: 3.5-3.8× MAML's → 28 meta-steps);
#   * MAML at its selected α (0.03) with the CPU of an alg2 row's 100 steps (355 meta-steps,
#     validated every 71: its meta-val curve past 300 meta-steps).
# Rows in order of what they answer: GWNMO at MAML's budget, MAML at GWNMO's, then MAML alg2 at
# MAML's budget (the objective at equal compute).
# One process (one core). Resumable. Report: benchmarks/study/report.py.
source "$(dirname "$0")/settings.sh"
common=("${study[@]}" --lr-values 1 --meta-steps 28 --regimes learned
    --out benchmarks/study/equal-compute-1shot)
maml_alg2='maml alg2=maml:schedule=alg2,inner_lr=0.1'
maml_long='maml 355 steps=maml:inner_lr=0.03,meta_steps=355,val_every=71'
$GWNMO "${common[@]}" --methods gwnmo --variants "$maml_long;$maml_alg2" "$@"
