#!/bin/bash
# The issue-13 main table (BENCHMARKS.md section 1): benchmark protocol on the offline data.
# Resumable: re-running this exact command continues where it stopped (finished cells are kept).
# Scaled to a shared 2-core CPU: 100 meta-steps per run, 100 meta-val tasks, 600 meta-test tasks per
# seed, 3-value grids (extended at the edges), seeds 0,1,2 on the mixed source and seed 0 on the
# leave-one-dataset-out sources.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
nice -n 10 $GWNMO benchmark protocol --weighting coordinate --skip-integrity-check \
    --sources mixed,mixed:cifar10,mixed:fmnist,mixed:mnist --shots 1,5 --regimes learned,fixed \
    --seeds 0,1,2 --seed-sources mixed \
    --meta-steps 100 --val-tasks 100 --test-tasks 600 \
    --out benchmarks/protocol "$@"
