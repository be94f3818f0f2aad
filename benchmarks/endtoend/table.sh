#!/bin/bash
# Issue 15's end-to-end table (BENCHMARKS.md section 4b): conv4 + linear head adapted from images
# (--adapt all) on the class-disjoint `mixed` protocol, 5-way 1-shot and 5-shot, learned and fixed
# init, GWNMO (factored M; default alg2 and the unrolled schedule) against MAML, Meta-SGD, SGD and
# Adam, paired CIs on the same meta-test tasks. Budget scaled to a 2-core CPU: 100 meta-steps of 4
# tasks per row, no step-size tuning (every row at its method's --adapt all default), seed 0,
# 50 meta-val tasks, 300 meta-test tasks. Resumable: re-run the same command to continue.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
nice -n 10 $GWNMO benchmark protocol --adapt all --skip-integrity-check \
    --sources mixed --shots 1,5 --regimes learned,fixed --seeds 0 \
    --methods gwnmo,maml,meta-sgd,sgd,adam --schedules alg2,unrolled --weighting factored \
    --lr-values 1 --meta-steps 100 --val-tasks 50 --test-tasks 300 \
    --out benchmarks/endtoend/protocol "$@"
