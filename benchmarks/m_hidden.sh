#!/usr/bin/env bash
# Does a smaller weighting network M (hidden 8 instead of 32) cost accuracy? Same protocol as the
# main table (MNIST 1-shot, 200 meta-steps, α = 3) and as the scale benchmark (1.07M-parameter head).
# Usage: bash benchmarks/m_hidden.sh DATA_ROOT
set -euo pipefail
DATA=${1:?usage: benchmarks/m_hidden.sh DATA_ROOT}
# --no-task-batch: the committed cells adapted one task at a time (drop it for faster, rounding-level different GWNMO cells)
COMMON=(--weighting coordinate --no-task-batch --datasets mnist --shots 1 --methods gwnmo --schedules alg2 --lr-values 1 --weighting-hidden 8
        --data-root "$DATA" --skip-integrity-check)
gwnmo-meta benchmark grid main "${COMMON[@]}" --out benchmarks/m_hidden/linear
gwnmo-meta benchmark grid main "${COMMON[@]}" --head-hidden 4096 --meta-steps 30 --out benchmarks/m_hidden/h4096
