#!/bin/bash
# Class splits of the pooled source on the offline data: benchmarks/splits/*.json (docs/TASKS.md).
# Usage: GWNMO_DATA=/path/to/data bash benchmarks/splits.sh   (needs only labels: seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/splits
gwnmo=${GWNMO:-.venv/bin/gwnmo-meta}
$gwnmo splits --dataset mixed --skip-integrity-check --json > benchmarks/splits/mixed.json
for d in mnist fmnist cifar10; do
  $gwnmo splits --dataset mixed --test-dataset "$d" --skip-integrity-check --json \
    > "benchmarks/splits/mixed-lodo-$d.json"
done
