#!/bin/bash
# The end-to-end study (BENCHMARKS.md §4): what GWNMO's end-to-end gain over MAML is made of.
#   objective:           MAML alg2 − MAML unrolled
#   learned steps:       MAML + tensor-step step sizes (MAML++'s LSLR), alg2 − MAML alg2
#   M's weighting:       GWNMO alg2 − the learned-step control under alg2
# beside the other meta-learned rows (Meta-SGD, Adam with a learned init, each at its own objective),
# and the same for a fixed init (tuned SGD and Adam fine-tuning; SGD with learned per-tensor step
# sizes; GWNMO). conv4 (no conv biases) + linear head adapted from images (--adapt all), class-disjoint
# `mixed` source, 5-way 1-shot. Every row tuned alike: α on the half-decade ladder (3 points
# centred on the method's --adapt all default, extended while the best sits at an edge),
# selected on meta-val of seed 0, the selection re-run on seeds 1 and 2; 100 meta-steps (the
# budget of the earlier end-to-end table), 50 meta-val tasks, 150 paired meta-test tasks per seed
# (450 pooled). Each cell records its wall and CPU seconds.
# Lanes share each regime's folder, each with its own rows (a cell is run by one lane only);
# a last pass over all rows (every cell cached) writes each regime's combined
# results. Resumable. Report: benchmarks/study/report.py.
# The grids were centred on the --adapt all defaults of their time (0.1; Adam 0.01). This study
# then set the defaults to its selections (MAML and SGD 0.03, Meta-SGD 0.01, Adam 0.003), so a rerun
# at today's defaults also scores the 0.01 rung of the two MAML alg2 rows, which the committed cells
# lack (their selection, 0.1, is bracketed by 0.03 and 0.3 either way); every other ladder is cached.
source "$(dirname "$0")/settings.sh"
common=("${study[@]}" --lr-values 3 --meta-steps 100)
maml_alg2='maml alg2=maml:schedule=alg2'
maml_lslr='maml lslr alg2=maml:schedule=alg2,learn_lr=tensor-step'
sgd_lr='sgd lr-tensor alg2=sgd:schedule=alg2,learn_lr=tensor'
gwnmo_lr='gwnmo lr-tensor alg2=gwnmo:schedule=alg2,learn_lr=tensor'
learned=(--regimes learned --out benchmarks/study/learned-1shot)
fixed=(--regimes fixed --out benchmarks/study/fixed-1shot)
# Six lanes of work, two at a time (xargs -P 2): a lane starts when one ends.
lanes=(
    "${learned[*]} --methods maml --variants '$maml_alg2;$maml_lslr'"
    "${learned[*]} --methods gwnmo --variants '$gwnmo_lr'"
    "${fixed[*]} --methods gwnmo"
    "${fixed[*]} --methods sgd --variants '$sgd_lr'"
    "${learned[*]} --methods meta-sgd,adam"
    "${fixed[*]} --methods adam"
)
printf '%s\0' "${lanes[@]}" | xargs -0 -P 2 -I{} bash -c "$GWNMO ${common[*]} {} $*"
$GWNMO "${common[@]}" "${learned[@]}" --methods maml,gwnmo,meta-sgd,adam --variants "$maml_alg2;$maml_lslr;$gwnmo_lr" "$@"
$GWNMO "${common[@]}" "${fixed[@]}" --methods sgd,adam,gwnmo --variants "$sgd_lr" "$@"
