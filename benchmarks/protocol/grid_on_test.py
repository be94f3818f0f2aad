"""Diagnostic, not selection: every step size a protocol row tried, scored on meta-test.

    GWNMO_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/protocol/grid_on_test.py \
        --out benchmarks/objective/protocol --source mixed --rows "gwnmo alg2,sgd" \
        --reference "sgd [fixed]" [--variants '...' as given to the suite] \
        > benchmarks/objective/protocol/grid_on_test.md

The protocol selects each row's hyperparameters on seed 0's class-disjoint meta-val. This script
asks what that selection cost: it scores the seed-0 cell of every configuration a row tried (each
already meta-trained by the suite; only its meta-test evaluation is new, cached in the cell's
``test.json``) on the seed-0 meta-test tasks, and gives each one's paired difference against the
reference row's seed-0 cell on the same tasks. Reading the test set to pick a value would be
selection on test; this only shows whether meta-val's choice transferred.

The suite keeps no checkpoints in git, so a configuration the suite did not select is meta-trained
again (same seed and settings: deterministic on one machine) under ``--scratch``; its recomputed
meta-val accuracy is printed next to the suite's as a check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluation.stats import mean_ci95, paired_diff_ci95
from gwnmo_meta.suites.protocol import (
    Cell,
    CellRunner,
    Source,
    Variant,
    build_protocol,
    parse_variants,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="a finished protocol suite's folder")
    ap.add_argument("--source", default="mixed")
    ap.add_argument("--rows", required=True, help="comma list of row names (variant names)")
    ap.add_argument("--reference", default="sgd [fixed]", help="row (with [regime]) to pair with")
    ap.add_argument("--variants", default="", help="the suite's --variants (extra rows)")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/grid_on_test"))
    args = ap.parse_args()

    results = json.loads((args.out / "results.json").read_text())
    suite = build_protocol(
        base=RunConfig.from_dict(results["base"]),
        sources=[args.source],
        test_tasks=results["settings"]["test_tasks"],
        grid_points=results["settings"]["grid_points"],
        extra_variants=parse_variants(args.variants),
    )
    variants = {v.name: v for v in suite.variants}
    runner, scratch = CellRunner(suite, args.out), CellRunner(suite, args.scratch)
    source = Source.parse(args.source)
    wanted = set(args.rows.split(","))
    print(f"# Every tried step size on meta-test ({args.out}, seed 0; diagnostic, not selection)\n")
    print(f"Δ: paired difference against `{args.reference}` (seed 0, same tasks), ± 95% CI.\n")
    print(
        "| source | shots | row | α | meta-val (%) | meta-val recomputed (%) | meta-test (%) "
        "| Δ (points) | selected |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for group in results["groups"]:
        if group["source"] != source.key:
            continue
        rows = {r["row"]: r for r in group["rows"]}
        ref = rows[args.reference]
        ref_cell = _cell(source, group, variants[ref["variant"]], ref, ref["hparams"])
        ref_acc = runner.test(ref_cell)["eval"]["task_accuracies"]
        for name, row in rows.items():
            if row["variant"] not in wanted:
                continue
            for hparams, val in row["grid"]:
                cell = _cell(source, group, variants[row["variant"]], row, hparams)
                selected = hparams == row["hparams"]
                again = "" if selected else f"{100 * scratch.validate(cell)['val_accuracy']:.2f}"
                ev = (runner if selected else scratch).test(cell)["eval"]
                if ev is None:
                    continue
                acc = ev["task_accuracies"]
                d, m = paired_diff_ci95(acc, ref_acc), mean_ci95(acc)
                mark = "yes" if selected else ""
                print(
                    f"| {group['label']} | {group['shots']} | {name} | {hparams.get('inner_lr', '–'):g} | "
                    f"{100 * val:.2f} | {again} | {100 * m.mean:.2f} ± {100 * m.ci95:.2f} | "
                    f"{100 * d.mean:+.2f} ± {100 * d.ci95:.2f} | {mark} |"
                )


def _cell(source: Source, group: dict, variant: Variant, row: dict, hparams: dict) -> Cell:
    return Cell(source, group["shots"], variant, row["regime"], tuple(hparams.items()), 0)


if __name__ == "__main__":
    main()
