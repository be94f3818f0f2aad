#!/bin/bash
# Reference rows on the old single-dataset protocol (BENCHMARKS.md appendix A): the same 600
# meta-test tasks (seed 1234) and features as benchmarks/main's cells on this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1
for ds in ${DATASETS:-mnist}; do  # DATASETS="mnist fmnist cifar10" for all three
  for k in 1 5; do
    for m in prototype logreg; do
      .venv/bin/gwnmo-meta evaluate --method $m --dataset $ds --shots $k --tasks 600 \
        --skip-integrity-check --json benchmarks/protocol/single/$ds-${k}shot-$m.json
    done
  done
done
