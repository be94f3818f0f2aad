# Settings shared by run.sh and equal_compute.sh (sourced): the same source, shots, seeds, schedule,
# meta-val and meta-test tasks, so every cell of either script pairs with the other's on identical
# meta-test tasks. Each script adds its own grid size, meta-steps, rows and folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
study=(benchmark protocol --adapt all --skip-integrity-check --sources mixed --shots 1
    --seeds 0,1,2 --schedules alg2 --val-tasks 50 --test-tasks 150 --quiet)
