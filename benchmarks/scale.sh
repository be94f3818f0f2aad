#!/usr/bin/env bash
# Scale benchmark: a 1.07M-parameter target head (conv4 features -> 4096 hidden -> 5 way) on
# MNIST 5-way 1-shot. GWNMO is run at one step size (its cell costs ~30 min on 2 CPU threads:
# ~10 min meta-training, ~18 min for 600 test tasks); the baselines, which are cheap, get the full
# three-value grid each. Usage: bash benchmarks/scale.sh DATA_ROOT
set -euo pipefail
DATA=${1:?usage: benchmarks/scale.sh DATA_ROOT}
# --no-task-batch: the committed cells adapted one task at a time (drop it for faster, rounding-level different GWNMO cells)
COMMON=(--weighting coordinate --no-task-batch --datasets mnist --shots 1 --schedules alg2 --head-hidden 4096 --meta-steps 30
        --data-root "$DATA" --skip-integrity-check)
gwnmo-meta benchmark grid main "${COMMON[@]}" --methods gwnmo --lr-values 1 --out benchmarks/scale/gwnmo
gwnmo-meta benchmark grid main "${COMMON[@]}" --methods maml,sgd,adam --lr-values 3 --out benchmarks/scale/baselines
