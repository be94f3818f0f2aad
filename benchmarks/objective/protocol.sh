#!/bin/bash
# Issue 14 on the issue-13 protocol (BENCHMARKS.md section 6): GWNMO's objective variants
# (learned step size global / per tensor, the legacy gradient through the normaliser) next to the
# default GWNMO row and the baselines, on the class-disjoint `mixed` source, both init regimes,
# 5-way 1-shot and 5-shot, seeds 0,1,2, same settings as benchmarks/protocol/run.sh.
# Resumable. Cells whose names match the main table's (same source, shots, method, settings,
# hyperparameters and seed: the rows without an override) are hard-linked from
# benchmarks/protocol/cells instead of recomputed; delete benchmarks/objective/protocol/cells to
# recompute everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
out=benchmarks/objective/protocol
mkdir -p "$out/cells"
for c in benchmarks/protocol/cells/mixed-*; do
    [ -e "$out/cells/$(basename "$c")" ] || cp -al "$c" "$out/cells/"
done
nice -n 10 $GWNMO benchmark protocol --weighting coordinate --skip-integrity-check \
    --sources mixed --shots 1,5 --regimes learned,fixed --seeds 0,1,2 \
    --methods gwnmo,maml,meta-sgd,sgd,adam,prototype,logreg --schedules alg2 \
    --variants 'gwnmo alg2 learn-lr global=gwnmo:schedule=alg2,learn_lr=global;gwnmo alg2 learn-lr tensor=gwnmo:schedule=alg2,learn_lr=tensor;gwnmo alg2 legacy grad-through-norm=gwnmo:schedule=alg2,grad_through_norm=true' \
    --meta-steps 100 --val-tasks 100 --test-tasks 600 \
    --out "$out" "$@"
