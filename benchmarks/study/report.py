"""Report of the end-to-end study (benchmarks/study/run.sh): rows, decomposition, compute.

Reads ``benchmarks/study/{learned,fixed}-1shot/results.json`` and their cells, and writes
``benchmarks/study/results.md`` and ``benchmarks/study/val_vs_cpu.png``:

* every row: pooled meta-test accuracy (± task-level 95% CI), per-seed accuracies, the seed-level
  mean ± Student-t 95% CI, the selected α and the tuning grid, meta-training CPU-seconds;
* the decomposition of GWNMO's gain, each part a paired difference on the same meta-test tasks,
  with its task-level CI and (primary) its seed-level CI over the per-seed differences;
* meta-val accuracy against meta-training CPU-seconds (seed 0's selected cells), and each row's
  meta-val accuracy at MAML's CPU budget.

Usage: python benchmarks/study/report.py [STUDY_DIR] [--test-grid]

``--test-grid`` first scores every meta-trained seed-0 grid cell on the meta-test stream (cached
as the cell's ``test.json``, the file the protocol itself writes), for a diagnostic computed after
selection: the Spearman rank correlation between meta-val and meta-test over seed 0's grid points.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from statistics import mean, stdev

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student-t 97.5% quantiles by df

# (name, a, b): a − b, each a row of the protocol table
DECOMPOSITION = {
    "learned": [
        ("objective: MAML alg2 − MAML unrolled", "maml alg2 [learned]", "maml [learned]"),
        (
            "learned per-layer, per-step steps: MAML + LSLR alg2 − MAML alg2",
            "maml lslr alg2 [learned]",
            "maml alg2 [learned]",
        ),
        (
            "M's weighting: GWNMO alg2 − MAML + LSLR alg2",
            "gwnmo alg2 [learned]",
            "maml lslr alg2 [learned]",
        ),
        ("total: GWNMO alg2 − MAML unrolled", "gwnmo alg2 [learned]", "maml [learned]"),
    ],
    "fixed": [
        (
            "learned per-layer steps: SGD + learned per-tensor α (alg2) − tuned SGD fine-tuning",
            "sgd lr-tensor alg2 [fixed]",
            "sgd [fixed]",
        ),
        (
            "M's weighting: GWNMO alg2 − SGD + learned per-tensor α (alg2)",
            "gwnmo alg2 [fixed]",
            "sgd lr-tensor alg2 [fixed]",
        ),
        ("total: GWNMO alg2 − tuned SGD fine-tuning", "gwnmo alg2 [fixed]", "sgd [fixed]"),
    ],
}
# the compute reference of each regime: MAML; with a fixed init, the cheapest meta-trained control
COMPUTE_REF = {"learned": "maml [learned]", "fixed": "sgd lr-tensor alg2 [fixed]"}


def t_ci(values: list[float]) -> tuple[float, float]:
    """Mean and Student-t 95% half-width (nan with one value)."""
    m = mean(values)
    if len(values) < 2:
        return m, math.nan
    return m, T95.get(len(values) - 1, 1.96) * stdev(values) / math.sqrt(len(values))


def cell_dir(folder: Path, row: dict, seed: int) -> Path | None:
    """The cell folder of ``row`` (its selected hyperparameters) on ``seed``."""
    slug = "".join(c if c.isalnum() or c in "-." else "_" for c in row["variant"])
    short = {"inner_lr": "lr", "hg_beta": "beta", "logreg_l2": "l2"}
    hp = "-".join(f"{short.get(k, k)}{v:g}" for k, v in row["hparams"].items()) or "nohp"
    pat = re.compile(
        rf"^mixed-1shot-{re.escape(slug)}(-[0-9a-f]{{6}})?-{row['regime']}-{re.escape(hp)}-s{seed}$"
    )
    hits = [p for p in (folder / "cells").iterdir() if pat.match(p.name)]
    return hits[0] if len(hits) == 1 else None


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def per_seed_diff(a: dict, b: dict) -> list[float]:
    """Per-seed differences of mean meta-test accuracy (seeds both rows have)."""
    sa, sb = a["seed_accuracy"], b["seed_accuracy"]
    return [sa[s] - sb[s] for s in sa if sa[s] is not None and sb.get(s) is not None]


def pair(group: dict, a: str, b: str) -> dict | None:
    for p in group["pairs"]:
        if (p["a"], p["b"]) == (a, b):
            return p
        if (p["a"], p["b"]) == (b, a):
            return {**p, "mean": -p["mean"]}
    return None


def fmt_pp(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


TEST_SEED = 1234  # the protocol's meta-test stream of seed s: TEST_SEED + s


def test_grid(folder: Path, test_tasks: int) -> None:
    """Score every meta-trained seed-0 cell of ``folder`` on meta-test (cached in test.json)."""
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint

    for cell in sorted((folder / "cells").glob("*-s0")):
        if (cell / "test.json").exists() or not (cell / "best.pt").exists():
            continue
        ev = evaluate_checkpoint(
            cell / "best.pt",
            skip_integrity_check=True,
            tasks=test_tasks,
            device="cpu",
            seed=TEST_SEED,
            progress=False,
        )
        ev.pop("text", None)
        rec = {"cell": cell.name, "eval": ev, "seconds": None}
        (cell / "test.json").write_text(json.dumps(rec, indent=2), encoding="utf-8")


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = mean(rx), mean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else math.nan


def rank_diagnostic(folder: Path) -> str | None:
    """Meta-val vs meta-test over the seed-0 cells that have both (a line, or None)."""
    pairs = []
    for cell in sorted((folder / "cells").glob("*-s0")):
        val, test = read(cell / "val.json"), read(cell / "test.json")
        if val and test and val.get("val_accuracy") is not None and test.get("eval"):
            pairs.append((cell.name, val["val_accuracy"], test["eval"]["accuracy_mean"]))
    if len(pairs) < 3:
        return None
    rho = spearman([p[1] for p in pairs], [p[2] for p in pairs])
    return (
        f"Meta-val vs meta-test over seed 0's {len(pairs)} scored grid points (diagnostic, after "
        f"selection): Spearman ρ = {rho:.2f}."
    )


def main(study: Path, grid: bool = False) -> None:
    lines = ["# End-to-end study: what GWNMO's gain is made of", ""]
    curves: dict[str, list[tuple[float, float]]] = {}
    for regime in ("learned", "fixed"):
        folder = study / f"{regime}-1shot"
        res = read(folder / "results.json")
        if res is None or not res.get("groups"):
            lines += [f"## {regime} init: no results yet", ""]
            continue
        g = res["groups"][0]
        rows = {r["row"]: r for r in g["rows"]}
        s, b = res["settings"], res["budget"]
        if grid:
            test_grid(folder, s["test_tasks"])
        lines += [
            f"## {regime} init ({g['label']}, {g['shots']}-shot, seeds "
            f"{', '.join(map(str, g['seeds']))})",
            "",
            f"{s['meta_steps']} meta-steps, {s['val_tasks']} meta-val tasks, {s['test_tasks']} "
            f"meta-test tasks per seed; budget of this folder: {b['meta_trained_cells']} "
            f"meta-training runs, {b.get('meta_val_cpu_seconds', 0):.0f} CPU-s of meta-training "
            "and meta-val.",
            "",
            "| row | accuracy (%) | per-seed (%) | seed mean ± t-CI (%) | selected α | grid "
            "(α: val %) | CPU-s / run | CPU vs ref |",
            "|---|---|---|---|---|---|---|---|",
        ]
        cpu: dict[str, float] = {}
        vals: dict[str, list[dict]] = {}
        for rid, r in rows.items():
            runs = [cell_dir(folder, r, sd) for sd in g["seeds"]]
            vals[rid] = [v for v in (read(d / "val.json") for d in runs if d) if v]
            cpus = [v["cpu_seconds"] for v in vals[rid] if "cpu_seconds" in v]
            cpu[rid] = mean(cpus) if cpus else math.nan
        ref_cpu = cpu.get(COMPUTE_REF[regime], math.nan)
        for rid, r in rows.items():
            seeds = [v for v in r["seed_accuracy"].values() if v is not None]
            m, h = t_ci(seeds) if seeds else (math.nan, math.nan)
            acc = (
                f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_ci95']:.2f}"
                if "accuracy_mean" in r
                else "–"
            )
            grid = ", ".join(
                f"{hp.get('inner_lr', 0):g}: {100 * v:.1f}" if v is not None else "diverged"
                for hp, v in r["grid"]
            )
            sel = ", ".join(f"{v:g}" for v in r["hparams"].values())
            edge = " (edge)" if r["at_edge"] else ""
            ratio = cpu[rid] / ref_cpu if ref_cpu > 0 else math.nan
            lines.append(
                f"| {rid} | {acc} | {' / '.join(f'{100 * x:.1f}' for x in seeds)} | "
                f"{fmt_pp(m)} ± {fmt_pp(h)} | {sel}{edge} | {grid} | {cpu[rid]:.0f} | "
                f"{ratio:.2f}× |"
            )
            # seed 0's selected run: meta-val accuracy against CPU-seconds (spread evenly)
            v0 = vals[rid][0] if vals[rid] else None
            if v0 and v0.get("history") and "cpu_seconds" in v0:
                per_step = v0["cpu_seconds"] / max(v0["meta_steps"], 1)
                curves[rid] = [(e["step"] * per_step, e["val_accuracy"]) for e in v0["history"]]
        lines += [
            "",
            "Decomposition (paired on the same meta-test tasks; the seed-level interval is the "
            "primary mark, **✓✓** when it excludes 0; the task-level CI is secondary, **✓**):",
            "",
            "| part | Δ (points) | task-level 95% CI | per-seed Δ | seed-level 95% CI |",
            "|---|---|---|---|---|",
        ]
        for name, a, bb in DECOMPOSITION[regime]:
            p = pair(g, a, bb)
            if p is None or a not in rows or bb not in rows:
                lines.append(f"| {name} | not run | | | |")
                continue
            d = per_seed_diff(rows[a], rows[bb])
            m, h = t_ci(d)
            seed_mark = " **✓✓**" if len(d) > 1 and abs(m) > h else ""
            task_mark = " **✓**" if p["significant"] else ""
            lines.append(
                f"| {name} | {100 * p['mean']:+.2f} | ± {100 * p['ci95']:.2f}{task_mark} | "
                f"{' / '.join(f'{100 * x:+.1f}' for x in d)} | "
                f"{100 * m:+.2f} ± {fmt_pp(h)}{seed_mark} |"
            )
        # each row's meta-val accuracy at the reference row's CPU budget (seed 0)
        ref_curve = curves.get(COMPUTE_REF[regime])
        if ref_curve:
            budget = ref_curve[-1][0]
            lines += [
                "",
                f"Meta-val accuracy at {COMPUTE_REF[regime]}'s CPU budget ({budget:.0f} "
                "CPU-s, seed 0; the best validation within the budget):",
                "",
            ]
            for rid in rows:
                c = [acc for t, acc in curves.get(rid, []) if t <= budget * 1.0001]
                lines.append(
                    f"- {rid}: " + (f"{100 * max(c):.1f}%" if c else "no validation within it")
                )
        diag = rank_diagnostic(folder)
        if diag:
            lines += ["", diag]
        lines.append("")
    (study / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for rid, pts in curves.items():
            style = "--" if rid.endswith("[fixed]") else "-"
            ax.plot(*zip(*pts, strict=True), style, marker="o", label=rid)
        ax.set_xlabel("meta-training CPU-seconds (seed 0, selected α)")
        ax.set_ylabel("meta-val accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(study / "val_vs_cpu.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--test-grid"]
    main(Path(argv[0]) if argv else Path(__file__).resolve().parent, "--test-grid" in sys.argv)
