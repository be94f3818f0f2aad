#!/bin/bash
# The end-to-end study (BENCHMARKS.md §4, to be run): what GWNMO's end-to-end gain over MAML is made
# of — the objective (MAML alg2 − MAML unrolled), learned per-layer steps (MAML + tensor-step alg2 −
# MAML alg2), M's input-dependent weighting (GWNMO alg2 − the best learned-step control under
# alg2) — with every row tuned alike (α on the half-decade grid, extended at its edges, selected
# on class-disjoint meta-val), over seeds, conv4 adapted from images (--adapt all), mixed source.
# Rows, each at every objective it has (alg2 and unrolled):
#   MAML; MAML + --learn-lr tensor-step; Meta-SGD; Adam with a learned init; GWNMO (factored M)
#   with and without --learn-lr tensor; GWNMO over an Adam base (--base adam);
#   fixed init: SGD and Adam fine-tuning, SGD with --learn-lr tensor, GWNMO.
# This script is the tuning stage: α tuned on seed 0 at 100 meta-steps, mixed 1-shot, both init
# regimes. Not yet run. The full stage (the selected α of every row at >= 300 meta-steps, seeds
# 0,1,2, 1- and 5-shot, 600 paired test tasks; seed 0 on the held-out CIFAR-10 source) follows
# from its selections. Resumable.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GWNMO_DATA=${GWNMO_DATA:?set GWNMO_DATA to the data root, e.g. /work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
GWNMO=${GWNMO:-.venv/bin/gwnmo-meta}
variants='maml alg2=maml:schedule=alg2'
variants+=';maml lslr unrolled=maml:schedule=unrolled,learn_lr=tensor-step'
variants+=';maml lslr alg2=maml:schedule=alg2,learn_lr=tensor-step'
variants+=';meta-sgd alg2=meta-sgd:schedule=alg2'
variants+=';adam alg2=adam:schedule=alg2'
variants+=';gwnmo alg2 lr-tensor=gwnmo:schedule=alg2,learn_lr=tensor'
variants+=';gwnmo unrolled lr-tensor=gwnmo:schedule=unrolled,learn_lr=tensor'
variants+=';gwnmo alg2 base-adam=gwnmo:schedule=alg2,base=adam'
variants+=';sgd lr-tensor alg2=sgd:schedule=alg2,learn_lr=tensor'
common=(benchmark protocol --adapt all --skip-integrity-check --weighting factored
    --methods gwnmo,maml,meta-sgd,sgd,adam --schedules alg2,unrolled --variants "$variants" --quiet)
nice -n 10 $GWNMO "${common[@]}" --sources mixed --shots 1 --regimes learned,fixed --seeds 0 \
    --meta-steps 100 --val-tasks 100 --test-tasks 300 --out benchmarks/study/tune "$@"
