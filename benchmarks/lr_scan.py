"""Inner step-size scan for plain fine-tuning (SGD, Adam from a random init) on real tasks.

No meta-training is involved, so it is cheap; it shows which step sizes suit the unit-norm
backbone features and motivates the grids in ``gwnmo_meta.suites.grid.LR_GRIDS``.

    python benchmarks/lr_scan.py --dataset mnist --data-root DIR [--skip-integrity-check]

Writes ``benchmarks/lr_scan/<dataset>.json`` and prints one line per (shots, method, lr, part).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from gwnmo_meta import defaults
from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluation.evaluate import evaluate_tasks
from gwnmo_meta.training.run_data import build_method_for, load_run_data, task_spec

GRIDS = {"sgd": (1.0, 3.0, 10.0, 30.0), "adam": (0.03, 0.1, 0.3, 1.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--skip-integrity-check", action="store_true")
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/lr_scan"))
    args = ap.parse_args()
    rows = []
    for shots in (1, 5):
        cfg = RunConfig(
            dataset=args.dataset,
            data_root=args.data_root,
            shots=shots,
            skip_integrity_check=args.skip_integrity_check,
            device="cpu",
        )
        data = load_run_data(cfg, torch.device("cpu"), progress=False)
        for method, lrs in GRIDS.items():
            for lr in lrs:
                c = replace(cfg, method=method, inner_lr=lr, learn_init=False).validate()
                model = build_method_for(c, data.feature_dim, torch.device("cpu"))
                for part in ("val", "test"):
                    sampler = data.sampler(part, task_spec(c), seed=7, device="cpu")
                    r = evaluate_tasks(model, sampler, args.tasks, progress=False)
                    row = {
                        "dataset": args.dataset,
                        "shots": shots,
                        "method": method,
                        "inner_lr": lr,
                        "part": part,
                        **r.to_dict(),
                    }
                    rows.append(row)
                    print(
                        f"{args.dataset} {shots}-shot {method:4s} lr {lr:<5g} {part:4s} "
                        f"acc {100 * r.accuracy.mean:5.1f}% loss {r.loss.mean:.3f}",
                        flush=True,
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.dataset}.json").write_text(json.dumps(rows, indent=2))
    # this dataset's pick; the default is the pick over all datasets (tests/test_defaults.py)
    for method, lrs in GRIDS.items():
        val = {
            lr: [
                r["accuracy_mean"]
                for r in rows
                if (r["method"], r["inner_lr"], r["part"]) == (method, lr, "val")
            ]
            for lr in lrs
        }
        best = max(lrs, key=lambda lr: sum(val[lr]) / len(val[lr]))
        default = defaults.INNER_LR[method].describe("α")
        print(f"{method}: best mean meta-val α on {args.dataset} {best:g}; default {default}")


if __name__ == "__main__":
    main()
