#!/bin/bash
# The end-to-end study (BENCHMARKS.md §4): what GWNMO's end-to-end gain over MAML is made of.
#   objective:           MAML alg2 − MAML unrolled
#   learned steps:       MAML + tensor-step step sizes (MAML++'s LSLR), alg2 − MAML alg2
#   M's weighting:       GWNMO alg2 − the best learned-step control under alg2
# and the same for a fixed init (SGD fine-tuning; SGD with learned per-tensor step sizes; GWNMO).
# conv4 (no conv biases) + linear head adapted from images (--adapt all), class-disjoint `mixed`
# source, 5-way 1-shot. Every row tuned alike: α on the half-decade ladder (3 points centred on the
# method's --adapt all default, extended while the best sits at an edge), selected on meta-val of
# seed 0, then the selection re-run on seeds 1 and 2; 100 meta-steps (the budget of the earlier
# end-to-end table), 50 meta-val tasks, 300 paired meta-test tasks per seed. Each cell records its
# wall and CPU seconds. The two regimes run as two processes (one core each). Resumable.
# Report: benchmarks/study/report.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
common=(benchmark protocol --adapt all --skip-integrity-check --sources mixed --shots 1
    --seeds 0,1,2 --schedules alg2 --lr-values 3 --meta-steps 100 --val-tasks 50 --test-tasks 300
    --quiet)
learned='maml alg2=maml:schedule=alg2;maml lslr alg2=maml:schedule=alg2,learn_lr=tensor-step'
fixed='sgd lr-tensor alg2=sgd:schedule=alg2,learn_lr=tensor'
nice -n 10 $GWNMO "${common[@]}" --regimes learned --methods maml,gwnmo --variants "$learned" \
    --out benchmarks/study/learned-1shot "$@" &
nice -n 10 $GWNMO "${common[@]}" --regimes fixed --methods sgd,gwnmo --variants "$fixed" \
    --out benchmarks/study/fixed-1shot "$@" &
wait
