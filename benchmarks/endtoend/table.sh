#!/bin/bash
# Issue 15's end-to-end table (BENCHMARKS.md section 4): conv4 + linear head adapted from images
# (--adapt all) on the class-disjoint `mixed` protocol, 5-way, GWNMO (factored M; default alg2 and
# the unrolled schedule) against MAML, Meta-SGD, SGD and Adam, paired CIs on the same meta-test
# tasks. Budget scaled to a 2-core CPU: 100 meta-steps of 4 tasks per row, no step-size tuning
# (every row at its method's --adapt all default), seed 0, 50 meta-val tasks, 300 meta-test tasks;
# 1-shot in the learned- and fixed-init regimes, 5-shot learned init only (its fixed-init rows would
# have cost another ~40 CPU minutes). Resumable: re-run to continue. Reports: results-1shot.* and
# results-5shot.* (one protocol invocation each; the cells are shared under cells/).
# Its rows ran at the --adapt all defaults of their time (α 0.1, Adam 0.01). The end-to-end study
# (benchmarks/study/) has since tuned MAML's, Meta-SGD's, SGD's and Adam's defaults, so at later commits
# this script scores new cells for those rows; check out e8a9760 to resume the committed ones.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
out=benchmarks/endtoend/protocol
run() {
    nice -n 10 $GWNMO benchmark protocol --adapt all --conv-bias --skip-integrity-check --sources mixed --seeds 0 \
        --methods gwnmo,maml,meta-sgd,sgd,adam --schedules alg2,unrolled --weighting factored \
        --lr-values 1 --meta-steps 100 --val-tasks 50 --test-tasks 300 --quiet --out "$out" "$@"
}
keep() {  # keep one invocation's reports under names of their own
    mv "$out/results.md" "$out/results-$1.md"
    mv "$out/results.json" "$out/results-$1.json"
    mv "$out/steps.png" "$out/steps-$1.png"
}
run --shots 1 --regimes learned,fixed
keep 1shot
run --shots 5 --regimes learned
keep 5shot
