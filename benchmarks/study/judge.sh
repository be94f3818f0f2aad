#!/bin/bash
# The sampled look-ahead judge in the end-to-end study (BENCHMARKS.md §4c): GWNMO alg2 at its
# selected α (0.1), judged on Q = 3 or Q = 1 query examples per class per inner step
# (--judge-queries) instead of the whole query set, over the study's three seeds, paired on its
# meta-test tasks (settings.sh). The full-judge cells are the study's own (hard-linked from
# learned-1shot: same settings, same cell names), so only the sampled rows are computed.
# Two lanes (one per Q), then one pass over all rows (every cell cached) for the combined results.
# Resumable. Report: benchmarks/study/report.py.
source "$(dirname "$0")/settings.sh"
out=benchmarks/study/judge-1shot
common=("${study[@]}" --lr-values 1 --meta-steps 100 --regimes learned --methods gwnmo --out "$out")
j3='gwnmo judge 3=gwnmo:schedule=alg2,judge_queries=3'
j1='gwnmo judge 1=gwnmo:schedule=alg2,judge_queries=1'
mkdir -p "$out/cells"
for c in benchmarks/study/learned-1shot/cells/mixed-1shot-gwnmo_alg2-*-learned-lr0.1-s*; do
    [ -e "$out/cells/$(basename "$c")" ] || cp -al "$c" "$out/cells/"
done
printf '%s\0' "$j3" "$j1" | xargs -0 -P 2 -I{} $GWNMO "${common[@]}" --variants {} "$@"
$GWNMO "${common[@]}" --variants "$j3;$j1" "$@"
