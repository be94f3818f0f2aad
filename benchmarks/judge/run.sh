#!/bin/bash
# The sampled look-ahead judge (--judge-queries Q): which Q keeps GWNMO's accuracy? GWNMO alg2 with
# the factored M, learned init, paired on the same meta-test tasks, full judge vs Q = 1 and 3 query
# examples per class per inner step, on the class-disjoint `mixed` source, seeds 0 and 1, 5-way
# 1-shot and 5-shot, every row at the method's default step size (no tuning: the rows differ in
# the judge only):
#   - the linear head on cached conv4 features (100 meta-steps, 100 meta-val, 600 meta-test tasks);
#   - conv4 end to end (--adapt all; the budget of the end-to-end table: 100 meta-steps, 50
#     meta-val, 300 meta-test tasks). Its seed-0 full-judge cells are hard-linked from
#     benchmarks/endtoend/protocol/cells (same settings, same cell names) instead of recomputed.
# Resumable. Report: benchmarks/judge/report.py (paired Q − full per seed, and over seeds).
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
variants='gwnmo alg2 judge 1=gwnmo:schedule=alg2,judge_queries=1;gwnmo alg2 judge 3=gwnmo:schedule=alg2,judge_queries=3'
common=(benchmark protocol --skip-integrity-check --sources mixed --regimes learned --seeds 0,1
    --methods gwnmo --schedules alg2 --weighting factored --lr-values 1 --meta-steps 100 --quiet)
for shots in 1 5; do
    nice -n 10 $GWNMO "${common[@]}" --shots $shots --val-tasks 100 --test-tasks 600 \
        --variants "$variants" --out benchmarks/judge/head-${shots}shot "$@"
done
for shots in 1 5; do
    out=benchmarks/judge/conv4-${shots}shot
    mkdir -p "$out/cells"
    for c in benchmarks/endtoend/protocol/cells/mixed-${shots}shot-gwnmo_alg2-*-learned-*-s0; do
        [ -e "$out/cells/$(basename "$c")" ] || cp -al "$c" "$out/cells/"
    done
    nice -n 10 $GWNMO "${common[@]}" --adapt all --conv-bias --shots $shots --val-tasks 50 --test-tasks 300 \
        --variants "$variants" --out "$out" "$@"
done
