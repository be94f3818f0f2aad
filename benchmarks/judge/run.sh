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
# --conv-bias: these suites were written before conv4 dropped its convolution biases by default.
# Resumable. Report: benchmarks/judge/report.py (paired Q − full per seed, and over seeds).
# A cell's name and meta-test tasks depend on its own seed, not on the --seeds list, so the
# one-seed lanes and the two-seed pass share cells.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
variants='gwnmo alg2 judge 1=gwnmo:schedule=alg2,judge_queries=1;gwnmo alg2 judge 3=gwnmo:schedule=alg2,judge_queries=3'
common=(benchmark protocol --skip-integrity-check --sources mixed --regimes learned --conv-bias
    --methods gwnmo --schedules alg2 --weighting factored --lr-values 1 --meta-steps 100 --quiet)
for shots in 1 5; do
    nice -n 10 $GWNMO "${common[@]}" --seeds 0,1 --shots $shots --val-tasks 100 --test-tasks 600 \
        --variants "$variants" --out benchmarks/judge/head-${shots}shot "$@"
done
conv4=("${common[@]}" --adapt all --val-tasks 50 --test-tasks 300)
for shots in 1 5; do
    out=benchmarks/judge/conv4-${shots}shot
    mkdir -p "$out/cells"
    for c in benchmarks/endtoend/protocol/cells/mixed-${shots}shot-gwnmo_alg2-*-learned-*-s0; do
        [ -e "$out/cells/$(basename "$c")" ] || cp -al "$c" "$out/cells/"
    done
done
nice -n 10 $GWNMO "${conv4[@]}" --seeds 0,1 --shots 1 --variants "$variants" \
    --out benchmarks/judge/conv4-1shot "$@"
# conv4 5-shot checks Q = 3 only (Q = 1 already falls outside the full judge's CI at 1-shot), one
# lane per seed (seed 0's full-judge cell is the hard-linked one), then one pass over both seeds.
j3=${variants#*;}
printf '%s\0' 0 1 | xargs -0 -P 2 -I{} nice -n 10 $GWNMO "${conv4[@]}" --seeds {} --shots 5 \
    --variants "$j3" --out benchmarks/judge/conv4-5shot "$@"
nice -n 10 $GWNMO "${conv4[@]}" --seeds 0,1 --shots 5 --variants "$j3" \
    --out benchmarks/judge/conv4-5shot "$@"
