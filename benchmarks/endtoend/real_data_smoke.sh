#!/usr/bin/env bash
# --adapt all on real data (MNIST offline copy): meta-train + meta-test for gwnmo (factored M) and maml.
# A smoke-scale budget for a shared 2-core CPU VM (20 meta-steps of 4 tasks, 5-way 1-shot 15-query,
# 100 meta-test tasks), not an accuracy result. Usage: GWNMO_DATA=/work/shared/data bash $0
set -euo pipefail
out=${OUT:-/tmp/endtoend-real}
for m in gwnmo maml; do
  .venv/bin/gwnmo-meta meta-train --adapt all --dataset mnist --method "$m" --weighting factored \
    --meta-steps 20 --val-every 10 --val-tasks 20 --test-tasks 100 --device cpu --out "$out/$m" --quiet
  .venv/bin/gwnmo-meta evaluate "$out/$m/best.pt" --tasks 100 --device cpu --json "$out/$m/eval.json" --quiet
done
