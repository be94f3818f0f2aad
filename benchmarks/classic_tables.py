"""Thesis Tables 1 and 2 with the classic training mode, on the offline data copies.

    .venv/bin/python benchmarks/classic_tables.py --data-root DIR [--epochs 5] [--seeds 0,1,2]
    .venv/bin/python benchmarks/classic_tables.py --data-root DIR --only gwnmo+adam,gwnmo+momentum
    .venv/bin/python benchmarks/classic_tables.py --data-root DIR --only gwnmo.factored

Step size scan: every optimizer at each α of ``LR_GRID`` on all three datasets and every seed;
an optimizer's α is the one with the best mean *validation* accuracy (at the val-selected epoch;
a diverged run scores 0). The selected α is used in the tables below and is the CLI's default
(``gwnmo_meta/defaults.py``; ``tests/test_defaults.py`` fails when the two disagree).
Table 1: GWNMO (Alg 1, thesis MLP) vs Adam vs HG on MNIST, FMNIST, CIFAR10 (plus plain SGD, and
GWNMO over a base direction: ``gwnmo+adam``, ``gwnmo+momentum`` = ``train --base adam|momentum``;
GWNMO with the factored M: ``gwnmo.factored`` = ``train --weighting factored``).
Table 2: CIFAR10, Alg 1 / Alg 2 × GWNMO / GWNMO' (and GWNMO over each base).
Table 3 (β sensitivity, the thesis's claim): CIFAR10, GWNMO Alg 1, meta step size β ∈ {1e-4, 1e-3, 1e-2}.
Each cell, mean ± std over seeds: the test accuracy/loss at the epoch with the best validation
accuracy (a seeded 10% of the train split, held out from training), the best test accuracy/loss
over epochs (the thesis's practice: selected on the test set) and the final epoch's.
Backbone: conv4 pre-trained by the toolkit on classes 0-4 (train-split images only), since the
thesis's ImageNet ResNet18 weights cannot be downloaded here. Resumable: finished runs are kept in
OUT/runs/*.json and not re-run. ``--only OPT,...``: scan and tabulate only those optimizers and
merge them into OUT/results.json's other rows (which must have the same epochs, seeds and
validation share); results.md then also pairs each GWNMO-over-a-base row with its baselines.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import torch

from gwnmo_meta import defaults
from gwnmo_meta.device import resolve_device
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.training.classic import ClassicConfig, train_classic
from gwnmo_meta.training.classic_run import load_features

THESIS = {
    ("table1", "cifar10", "gwnmo alg1"): (71.5, 0.822),
    ("table1", "cifar10", "adam"): (72.2, 0.815),
    ("table1", "cifar10", "hg"): (68.9, 0.898),
    ("table1", "mnist", "gwnmo alg1"): (96.2, 0.129),
    ("table1", "mnist", "adam"): (96.4, 0.119),
    ("table1", "mnist", "hg"): (94.8, 0.167),
    ("table1", "fmnist", "gwnmo alg1"): (86.4, 0.390),
    ("table1", "fmnist", "adam"): (87.0, 0.377),
    ("table1", "fmnist", "hg"): (83.1, 0.489),
    ("table2", "cifar10", "gwnmo alg1"): (71.5, 0.822),
    ("table2", "cifar10", "gwnmo alg2"): (71.5, 0.821),
    ("table2", "cifar10", "gwnmo-prime alg1"): (71.5, 0.823),
    ("table2", "cifar10", "gwnmo-prime alg2"): (71.6, 0.852),
}
DATASETS = ("mnist", "fmnist", "cifar10")
_SGD_LIKE = (0.1, 0.3, 1.0, 3.0)  # unit-norm features; 0.1 was the CLI default before the scan
LR_GRID: dict[str, tuple[float, ...]] = {
    "gwnmo": _SGD_LIKE,
    "gwnmo-prime": _SGD_LIKE,
    "hg": _SGD_LIKE,
    "sgd": _SGD_LIKE,
    # 0.001 was the CLI default before the scan; 0.1 added after 0.03 won at the grid's edge
    "adam": (0.001, 0.003, 0.01, 0.03, 0.1),
    # GWNMO over a base direction (with uniform h it is the base optimizer): the base's grid,
    # Adam's for adam; the SGD-like grid × (1 − μ), μ = 0.9, for momentum (the same step length)
    "gwnmo+adam": (0.001, 0.003, 0.01, 0.03, 0.1),
    "gwnmo+momentum": (0.01, 0.03, 0.1, 0.3, 1.0),  # 1 added after 0.3 won at the grid's edge
    "gwnmo.factored": _SGD_LIKE,  # GWNMO with the factored M (`--weighting factored`)
}
BASE_ROWS = ("gwnmo+adam", "gwnmo+momentum")  # optimizer+base: `train --optimizer gwnmo --base ...`
WEIGHTING_ROWS = ("gwnmo.factored",)  # optimizer.weighting: `train --weighting ...`
# (row, baseline) pairs compared seed by seed in results.md (same seed: same target init, batch
# order and validation split)
PAIRS = (
    ("gwnmo+adam alg1", "adam"),
    ("gwnmo+adam alg1", "gwnmo alg1"),
    ("gwnmo+momentum alg1", "gwnmo alg1"),
    ("gwnmo+momentum alg1", "sgd"),
    ("gwnmo.factored alg1", "gwnmo alg1"),
    ("gwnmo.factored alg1", "adam"),
)
META_LR = defaults.CLASSIC_META_LR.value  # β in Tables 1-2
BETAS = (1e-4, 1e-3, 1e-2)  # Table 3
SCAN_SCHEDULE = "alg1"  # GWNMO/GWNMO' are scanned with the CLI's default schedule

Cell = tuple[str, str, str, str, float, float]  # (table, dataset, optimizer, schedule, α, β)


def label(opt: str, sch: str) -> str:
    return f"{opt} {sch}" if opt.startswith("gwnmo") else opt


def run_once(args, ds: str, opt: str, sch: str, lr: float, beta: float, seed: int, feats: dict):
    """One classic run (or its stored record): selected/best/final results, or {"diverged": ...}."""
    b = "" if beta == META_LR else f"-b{beta:g}"
    key = f"{ds}-{opt}-{sch}-lr{lr:g}{b}-e{args.epochs}-v{args.val_fraction:g}-s{seed}"
    path = Path(args.out) / "runs" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    if (
        ds not in feats
    ):  # features: backbone seeded 0 for all runs; seeds vary the target, M, val split
        base = ClassicConfig(dataset=ds, data_root=args.data_root, skip_integrity_check=True)
        feats[ds], _ = load_features(base, resolve_device(args.device), True)
    opt_base, _, weighting = opt.partition(".")  # gwnmo.factored: GWNMO with the factored M
    optimizer, _, direction = opt_base.partition("+")  # gwnmo+adam: GWNMO over Adam's direction
    cfg = ClassicConfig(
        dataset=ds,
        data_root=args.data_root,
        skip_integrity_check=True,
        optimizer=optimizer,
        base=direction or "grad",
        schedule=sch if sch != "-" else "alg1",
        weighting=weighting or "mlp",
        lr=lr,
        meta_lr=beta,
        epochs=args.epochs,
        seed=seed,
        device=args.device,
        val_fraction=args.val_fraction,
    )
    try:
        (res,) = train_classic(cfg, progress=False, features=feats[ds])
        record = res.to_dict()
    except ConfigError as exc:  # the training loss became NaN/Inf
        record = {"diverged": str(exc)}
    record["settings"] = {
        k: getattr(cfg, k) for k in ("lr", "meta_lr", "hg_beta", "hidden", "batch_size")
    }
    path.write_text(json.dumps(record) + "\n")
    return record


def scan(
    args, seeds: list[int], feats: dict, only: set[str] | None = None
) -> tuple[list[dict], dict[str, float]]:
    """The step-size scan: rows (optimizer, α, per-dataset mean val accuracy) and the selected α."""
    rows, selected = [], {}
    for opt, grid in LR_GRID.items():
        if only is not None and opt not in only:
            continue
        sch = SCAN_SCHEDULE if opt.startswith("gwnmo") else "-"
        best = None
        for lr in grid:
            row = {"optimizer": opt, "lr": lr, "diverged": 0}
            for ds in DATASETS:
                runs = [run_once(args, ds, opt, sch, lr, META_LR, s, feats) for s in seeds]
                row["diverged"] += sum("diverged" in r for r in runs)
                vals = [r.get("selected_val_accuracy", 0.0) for r in runs]  # diverged: 0
                tests = [r["test_accuracy_at_best_val"] for r in runs if "diverged" not in r]
                row[f"{ds}_val"] = 100 * statistics.mean(vals)
                row[f"{ds}_test"] = 100 * statistics.mean(tests) if tests else float("nan")
            row["mean_val"] = statistics.mean(row[f"{ds}_val"] for ds in DATASETS)
            rows.append(row)
            print(f"scan {opt:12s} α {lr:<6g} mean val {row['mean_val']:.2f}", flush=True)
            if best is None or row["mean_val"] > best[0]:
                best = (row["mean_val"], lr)
        selected[opt] = best[1]
    for row in rows:
        row["selected"] = selected[row["optimizer"]] == row["lr"]
    return rows, selected


def cells(lr: dict[str, float]) -> list[Cell]:
    """(table, dataset, optimizer, schedule, α, β) of every row, at the selected step sizes."""
    out: list[Cell] = []
    for ds in DATASETS:
        out += [
            ("table1", ds, o, s, lr[o], META_LR)
            for o, s in (("gwnmo", "alg1"), ("adam", "-"), ("hg", "-"), ("sgd", "-"))
        ]
        out += [
            ("table1", ds, o, "alg1", lr[o], META_LR)
            for o in (*BASE_ROWS, *WEIGHTING_ROWS)
            if o in lr
        ]
    out += [
        ("table2", "cifar10", o, s, lr[o], META_LR)
        for o in ("gwnmo", "gwnmo-prime", *BASE_ROWS, *WEIGHTING_ROWS)
        if o in lr
        for s in ("alg1", "alg2")
    ]
    out += [("table3", "cifar10", "gwnmo", "alg1", lr["gwnmo"], b) for b in BETAS]
    return out


_METRICS = (
    ("test_accuracy_at_best_val", 100),
    ("test_loss_at_best_val", 1),
    ("best_test_accuracy", 100),
    ("best_test_loss", 1),
    ("final_test_accuracy", 100),
    ("final_test_loss", 1),
)


def table_row(args, cell: Cell, seeds: list[int], feats: dict) -> dict:
    table, ds, opt, sch, lr, beta = cell
    runs = [run_once(args, ds, opt, sch, lr, beta, s, feats) for s in seeds]
    ok = [r for r in runs if "diverged" not in r]
    row = {
        "table": table,
        "dataset": ds,
        "optimizer": label(opt, sch),
        "lr": lr,
        "meta_lr": beta,
        "hg_beta": ok[0]["settings"]["hg_beta"] if ok and opt == "hg" else None,
        "epochs": args.epochs,
        "val_fraction": args.val_fraction,
        "seeds": len(seeds),
        "diverged": len(runs) - len(ok),
    }
    for key, scale in _METRICS:
        vals = [scale * r[key] for r in ok]
        row[key + "_mean"] = statistics.mean(vals) if vals else float("nan")
        row[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        row[key + "_per_seed"] = [None if "diverged" in r else scale * r[key] for r in runs]
    row["thesis_accuracy"], row["thesis_loss"] = THESIS.get(
        (table, ds, label(opt, sch)), (None, None)
    )
    print(
        f"{table} {ds:8s} {row['optimizer']:18s} test@best-val "
        f"{row['test_accuracy_at_best_val_mean']:.2f} ± {row['test_accuracy_at_best_val_std']:.2f}"
        f"  best test {row['best_test_accuracy_mean']:.2f} ± {row['best_test_accuracy_std']:.2f}",
        flush=True,
    )
    return row


def paired(rows: list[dict]) -> list[dict]:
    """Each (row, baseline) of ``PAIRS`` on each dataset of Table 1: test acc @ best val, seed by seed."""
    key = "test_accuracy_at_best_val_per_seed"
    table1 = {(r["dataset"], r["optimizer"]): r for r in rows if r["table"] == "table1"}
    out = []
    for row, baseline in PAIRS:
        for ds in DATASETS:
            a, b = table1.get((ds, row)), table1.get((ds, baseline))
            if a is None or b is None:
                continue
            both = [
                (x, y) for x, y in zip(a[key], b[key], strict=True) if None not in (x, y)
            ]  # a diverged seed has no pair
            diffs = [x - y for x, y in both]
            out.append(
                {
                    "dataset": ds,
                    "row": row,
                    "baseline": baseline,
                    "row_per_seed": [x for x, _ in both],
                    "baseline_per_seed": [y for _, y in both],
                    "diff_per_seed": diffs,
                    "diff_mean": statistics.mean(diffs) if diffs else float("nan"),
                    "diff_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                    "wins": sum(d > 0 for d in diffs),
                    "pairs": len(diffs),
                }
            )
    return out


def write_markdown(
    args, path: Path, scan_rows: list[dict], rows: list[dict], commands: list[str] | None = None
) -> None:
    pm = lambda r, k, f: f"{r[k + '_mean']:{f}} ± {r[k + '_std']:{f}}"  # noqa: E731
    commands = commands or [" ".join(["python", *sys.argv])]
    lines = [
        f"# Classic training (thesis Tables 1 and 2), {args.epochs} epochs, seeds {args.seeds}",
        "",
        f"Command{'s' if len(commands) > 1 else ''}: "
        + "; then ".join(f"`{c}`" for c in commands)
        + ". Mean ± std over seeds. "
        f"**test @ best val**: test accuracy/loss at the epoch with the best accuracy on a seeded "
        f"{100 * args.val_fraction:g}% of the train split held out from training; **best test**: the best "
        "test accuracy/loss over epochs (the thesis's practice, selected on the test set); final: "
        "the last epoch; α: the target's step size, β: M's meta step size (GWNMO only; HG's "
        "hypergradient step is `hg_beta` in results.json). Backbone: toolkit conv4 (not the "
        "thesis's ImageNet ResNet18). Thesis numbers for reference.",
        "",
        "## Step-size scan (selects α on validation accuracy)",
        "",
        "Mean validation accuracy (%) at the val-selected epoch over seeds (a diverged run scores 0); "
        "the selected α (**bold**) has the best mean over the three datasets and is the CLI default.",
        "",
        "| optimizer | α | mnist val | fmnist val | cifar10 val | mean val | diverged runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in scan_rows:
        a = f"**{r['lr']:g}**" if r["selected"] else f"{r['lr']:g}"
        vals = " | ".join(f"{r[f'{ds}_val']:.2f}" for ds in DATASETS)
        lines.append(f"| {r['optimizer']} | {a} | {vals} | {r['mean_val']:.2f} | {r['diverged']} |")
    lines.append("")
    for table in ("table1", "table2", "table3"):
        lines += [
            f"## {table.capitalize()}",
            "",
            "| dataset | optimizer | α | β | test acc @ best val (%) | best test acc (%) "
            "| test loss @ best val | best test loss | final acc (%) | thesis acc / loss |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["table"] != table:
                continue
            th = (
                "—"
                if r["thesis_accuracy"] is None
                else f"{r['thesis_accuracy']}% / {r['thesis_loss']}"
            )
            div = (
                f" ({r['diverged']}/{r['seeds']} seeds diverged, excluded)" if r["diverged"] else ""
            )
            beta = f"{r['meta_lr']:g}" if r["optimizer"].startswith("gwnmo") else "—"
            lines.append(
                f"| {r['dataset']} | {r['optimizer']}{div} | {r['lr']:g} | {beta} "
                f"| {pm(r, 'test_accuracy_at_best_val', '.2f')} | {pm(r, 'best_test_accuracy', '.2f')} "
                f"| {pm(r, 'test_loss_at_best_val', '.3f')} | {pm(r, 'best_test_loss', '.3f')} "
                f"| {pm(r, 'final_test_accuracy', '.2f')} | {th} |"
            )
        lines.append("")
    pairs = paired(rows)
    if pairs:
        lines += [
            "## Paired: GWNMO over a base direction vs its baselines (Table 1)",
            "",
            "Test accuracy @ best val (%), seed by seed (same seed: same target init, batch order and "
            "validation split); difference = row − baseline, mean ± std over the paired seeds.",
            "",
            "| dataset | row | baseline | row per seed | baseline per seed | difference | row ahead |",
            "|---|---|---|---|---|---|---|",
        ]
        seeds = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        for p in pairs:
            lines.append(
                f"| {p['dataset']} | {p['row']} | {p['baseline']} | {seeds(p['row_per_seed'])} "
                f"| {seeds(p['baseline_per_seed'])} | {p['diff_mean']:+.2f} ± {p['diff_std']:.2f} "
                f"| {p['wins']}/{p['pairs']} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--val-fraction", type=float, default=defaults.CLASSIC_VAL_FRACTION)
    ap.add_argument("--out", default="benchmarks/classic")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated optimizers of LR_GRID (e.g. gwnmo+adam,gwnmo+momentum): scan and "
        "tabulate only these, merged into OUT/results.json's other rows",
    )
    args = ap.parse_args()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    feats: dict[str, tuple] = {}
    if args.only:
        return main_only(args, out, seeds, feats)
    scan_rows, selected = scan(args, seeds, feats)
    rows = [table_row(args, c, seeds, feats) for c in cells(selected)]
    write_csv(out / "results.csv", rows)
    summary = {
        "command": " ".join(["python", *sys.argv]),
        "epochs": args.epochs,
        "seeds": seeds,
        "val_fraction": args.val_fraction,
        "selection": "α: best mean val accuracy over datasets and seeds; epoch: best val accuracy",
        "selected_lr": selected,
        "lr_scan": scan_rows,
        "rows": rows,
    }
    summary["paired"] = paired(rows)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_markdown(args, out / "results.md", scan_rows, rows)
    print("selected α:", selected)
    print("wrote", out / "results.md")


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        flat = [{k: v for k, v in r.items() if not k.endswith("_per_seed")} for r in rows]
        w = csv.DictWriter(fh, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)


def main_only(args, out: Path, seeds: list[int], feats: dict) -> None:
    """``--only``: scan and tabulate some optimizers, merged into the committed results.json."""
    only = set(args.only.split(","))
    unknown = only - set(LR_GRID)
    if unknown:
        sys.exit(f"error: --only names unknown optimizers: {', '.join(sorted(unknown))}")
    prev = json.loads((out / "results.json").read_text())
    same = (prev["epochs"], prev["seeds"], prev["val_fraction"])
    if same != (args.epochs, seeds, args.val_fraction):
        sys.exit(f"error: {out / 'results.json'} has (epochs, seeds, val share) {same}; give those")
    if f"--data-root {args.data_root}" not in prev["command"]:
        sys.exit(f"error: {out / 'results.json'} was made from other data: {prev['command']}")
    scan_rows, selected = scan(args, seeds, feats, only)
    selected = {**prev["selected_lr"], **selected}
    new_rows = [table_row(args, c, seeds, feats) for c in cells(selected) if c[2] in only]
    kept = [r for r in prev["rows"] if r["optimizer"].split()[0] not in only]
    rows = [r for t in ("table1", "table2", "table3") for r in kept + new_rows if r["table"] == t]
    scan_rows = [r for r in prev["lr_scan"] if r["optimizer"] not in only] + scan_rows
    command = " ".join(["python", *sys.argv])
    added = [a for a in prev.get("added", []) if set(a["optimizers"]) - only]
    added.append({"optimizers": sorted(only), "command": command})
    summary = {
        **prev,
        "selected_lr": selected,
        "lr_scan": scan_rows,
        "rows": rows,
        "added": added,
        "paired": paired(rows),
    }
    write_csv(out / "results.csv", rows)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    commands = [prev["command"]] + [a["command"] for a in added]
    write_markdown(args, out / "results.md", scan_rows, rows, commands)
    for p in summary["paired"]:
        print(
            f"paired {p['dataset']:8s} {p['row']} − {p['baseline']}: "
            f"{p['diff_mean']:+.2f} ± {p['diff_std']:.2f} ({p['wins']}/{p['pairs']} seeds ahead)"
        )
    print("wrote", out / "results.md")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
