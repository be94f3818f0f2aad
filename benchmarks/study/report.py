"""Report of the end-to-end study (benchmarks/study/run.sh), read from its cells.

Reads ``benchmarks/study/{learned,fixed}-1shot/cells`` (so a study still running, or stopped,
reports what it has) and writes ``benchmarks/study/results.md`` and ``val_vs_cpu.png``:

* every row: its seed-0 grid (α: meta-val %), the α selected on seed-0 meta-val (as the protocol
  selects it), meta-test accuracy per seed at that α, the seed-level mean ± Student-t 95% CI, the
  pooled task-level CI, and the median CPU-seconds of its meta-training runs (with validations);
* the decomposition of GWNMO's gain, each part a paired difference on the same meta-test tasks:
  the seed-level interval over the per-seed differences (primary, with ≥ 2 seeds) and the task-level
  CI over the pooled tasks (secondary);
* meta-val accuracy against meta-training CPU-seconds (seed 0, selected α), and each row's
  meta-val accuracy within MAML's CPU budget;
* with ``--test-grid``, every meta-trained seed-0 grid cell is first scored on meta-test (cached
  as its ``test.json``, the file the protocol writes) for a diagnostic computed after selection:
  Spearman's rank correlation between meta-val and meta-test over those grid points.

Usage: python benchmarks/study/report.py [STUDY_DIR] [--test-grid]
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from statistics import mean, median

from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluation.stats import mean_ci95, paired_diff_ci95
from gwnmo_meta.suites.cells import Cell, Source, Variant
from gwnmo_meta.suites.protocol import protocol_base
from gwnmo_meta.suites.protocol_runner import TEST_SEED

CELL = re.compile(  # "nohp": a row that pins its α (equal_compute.sh); α is in its config.json
    r"^mixed-1shot-(?P<row>.+?)(?:-[0-9a-f]{6})?-(?P<regime>learned|fixed)"
    r"-(?:lr(?P<lr>[0-9.e+-]+)|nohp)-s(?P<seed>\d+)$"
)
# (name, a, b): a − b, rows named "<variant> [<regime>]"
DECOMPOSITION = {
    "learned": [
        ("objective: MAML alg2 − MAML unrolled", "maml alg2 [learned]", "maml [learned]"),
        (
            "learned per-layer, per-step α: MAML + LSLR alg2 − MAML alg2",
            "maml lslr alg2 [learned]",
            "maml alg2 [learned]",
        ),
        (
            "objective and learned α together: MAML + LSLR alg2 − MAML unrolled",
            "maml lslr alg2 [learned]",
            "maml [learned]",
        ),
        (
            "M's weighting: GWNMO alg2 − MAML + LSLR alg2",
            "gwnmo alg2 [learned]",
            "maml lslr alg2 [learned]",
        ),
        ("total: GWNMO alg2 − MAML unrolled", "gwnmo alg2 [learned]", "maml [learned]"),
        (
            "learned per-tensor α on top of M: GWNMO + learned α alg2 − GWNMO alg2",
            "gwnmo lr-tensor alg2 [learned]",
            "gwnmo alg2 [learned]",
        ),
    ],
    "fixed": [
        (
            "learned per-tensor α: SGD + learned α (alg2) − tuned SGD fine-tuning",
            "sgd lr-tensor alg2 [fixed]",
            "sgd [fixed]",
        ),
        (
            "M's weighting: GWNMO alg2 − SGD + learned α (alg2)",
            "gwnmo alg2 [fixed]",
            "sgd lr-tensor alg2 [fixed]",
        ),
        ("total: GWNMO alg2 − tuned SGD fine-tuning", "gwnmo alg2 [fixed]", "sgd [fixed]"),
    ],
}
# (name, (folder, row) a, (folder, row) b): a − b at equal compute; "study": learned-1shot,
# "equal-compute": equal-compute-1shot (equal_compute.sh)
EQUAL_COMPUTE = [
    (
        "GWNMO alg2 at MAML's CPU (28 steps) − MAML (100 steps)",
        ("equal-compute", "gwnmo alg2 [learned]"),
        ("study", "maml [learned]"),
    ),
    (
        "MAML alg2 at MAML's CPU (28 steps) − MAML (100 steps)",
        ("equal-compute", "maml alg2 [learned]"),
        ("study", "maml [learned]"),
    ),
    (
        "MAML + LSLR alg2 at MAML's CPU (28 steps) − MAML (100 steps)",
        ("equal-compute", "maml lslr alg2 [learned]"),
        ("study", "maml [learned]"),
    ),
    (
        "MAML at GWNMO alg2's CPU (355 steps) − GWNMO alg2 (100 steps)",
        ("equal-compute", "maml 355 steps [learned]"),
        ("study", "gwnmo alg2 [learned]"),
    ),
    (
        "MAML 355 steps − MAML 100 steps",
        ("equal-compute", "maml 355 steps [learned]"),
        ("study", "maml [learned]"),
    ),
]
# (name, (folder, row) a, (folder, row) b): the sampled judge; "judge": judge-1shot (judge.sh)
JUDGE = [
    (
        "GWNMO alg2, judge 3/class − full judge",
        ("judge", "gwnmo judge 3 [learned]"),
        ("study", "gwnmo alg2 [learned]"),
    ),
    (
        "GWNMO alg2, judge 1/class − full judge",
        ("judge", "gwnmo judge 1 [learned]"),
        ("study", "gwnmo alg2 [learned]"),
    ),
    (
        "GWNMO alg2, judge 3/class − MAML",
        ("judge", "gwnmo judge 3 [learned]"),
        ("study", "maml [learned]"),
    ),
    (
        "GWNMO alg2, judge 1/class − MAML",
        ("judge", "gwnmo judge 1 [learned]"),
        ("study", "maml [learned]"),
    ),
]
# each regime's compute reference: MAML; with a fixed init, the meta-trained control
COMPUTE_REF = {"learned": "maml [learned]", "fixed": "sgd lr-tensor alg2 [fixed]"}
# each regime's baseline that needs no learned optimizer: MAML; with a fixed init, SGD fine-tuning
BASELINE = {"learned": "maml [learned]", "fixed": "sgd [fixed]"}


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def t_ci(values: list[float]) -> tuple[float, float]:
    """Mean and Student-t 95% half-width (nan with one value)."""
    ci = mean_ci95(values)
    return ci.mean, ci.ci95 if ci.n > 1 else math.nan


def pct(x: float, sign: bool = False) -> str:
    return "n/a" if math.isnan(x) else (f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}")


def collect(folder: Path) -> dict[str, dict]:
    """Rows of a regime's folder: grid (seed 0), selection, and the selected cells' records."""
    rows: dict[str, dict] = defaultdict(lambda: {"grid": {}, "cells": {}})
    for cell in sorted((folder / "cells").iterdir()) if (folder / "cells").exists() else []:
        m = CELL.match(cell.name)
        val = read(cell / "val.json")
        if not m or val is None:
            continue
        row = rows[f"{m['row'].replace('_', ' ')} [{m['regime']}]"]
        lr = float(m["lr"]) if m["lr"] else float((read(cell / "config.json") or {})["inner_lr"])
        row["cells"][(lr, int(m["seed"]))] = (cell, val, read(cell / "test.json"))
        if m["seed"] == "0":
            row["grid"][lr] = val["val_accuracy"]
    for row in rows.values():
        scored = {lr: v for lr, v in row["grid"].items() if v is not None}
        row["lr"] = max(scored, key=lambda lr: scored[lr]) if scored else None
        lrs = sorted(row["grid"])
        row["bracketed"] = row["lr"] is not None and lrs[0] < row["lr"] < lrs[-1]
        row["seeds"] = {
            seed: (val, test)
            for (lr, seed), (_, val, test) in sorted(row["cells"].items())
            if lr == row["lr"]
        }
    return dict(rows)


def test_accs(row: dict) -> dict[int, list[float]]:
    """Per-task meta-test accuracies by seed (seeds with a test.json at the selected α)."""
    return {
        seed: test["eval"]["task_accuracies"]
        for seed, (_, test) in row["seeds"].items()
        if test and test.get("eval")
    }


def row_cpu(row: dict) -> float:
    """CPU-seconds of one of the row's runs: the median over all its cells (every α and seed). A
    cell resumed after an interruption records only the part after the resume; the median keeps
    one such cell from moving the row's cost."""
    cpus = [v["cpu_seconds"] for _, v, _ in row["cells"].values() if "cpu_seconds" in v]
    return median(cpus) if cpus else math.nan


def row_line(name: str, row: dict, ref_cpu: float, grid_run: bool = True) -> str:
    """One row of a regime's table; ``grid_run=False`` for a row run at one pinned α (no edge)."""
    accs = test_accs(row)
    per_seed = [mean(a) for _, a in sorted(accs.items())]
    m, h = t_ci(per_seed) if per_seed else (math.nan, math.nan)
    pooled = mean_ci95([x for a in accs.values() for x in a]) if accs else None
    cpu = row_cpu(row)
    grid = ", ".join(
        f"{lr:g}: {'diverged' if v is None else f'{100 * v:.1f}'}"
        for lr, v in sorted(row["grid"].items())
    )
    edge = grid_run and not row["bracketed"]
    sel = "–" if row["lr"] is None else f"{row['lr']:g}" + (" (edge)" if edge else "")
    return (
        f"| {name} | {grid} | {sel} | "
        f"{' / '.join(f'{100 * x:.1f}' for x in per_seed) or '–'} | "
        f"{pct(m)} ± {pct(h)} | "
        f"{'–' if pooled is None else f'{100 * pooled.mean:.2f} ± {100 * pooled.ci95:.2f}'} | "
        f"{cpu:.0f} | {cpu / ref_cpu if ref_cpu > 0 else math.nan:.2f}× |"
    )


def diff_line(name: str, a: dict | None, b: dict | None) -> str:
    if a is None or b is None:
        return f"| {name} | not run | | | |"
    ta, tb = test_accs(a), test_accs(b)
    seeds = sorted(set(ta) & set(tb))
    if not seeds:
        return f"| {name} | no common seed yet | | | |"
    if any(
        a["seeds"][s][1]["eval"]["tasks_digest"] != b["seeds"][s][1]["eval"]["tasks_digest"]
        for s in seeds
    ):
        raise SystemExit(f"error: {name}: the two rows were scored on different meta-test tasks")
    pooled = paired_diff_ci95([x for s in seeds for x in ta[s]], [x for s in seeds for x in tb[s]])
    per_seed = [mean(ta[s]) - mean(tb[s]) for s in seeds]
    m, h = t_ci(per_seed)
    seed_mark = " **✓✓**" if len(seeds) > 1 and abs(m) > h else ""
    task_mark = " **✓**" if pooled.significant else ""
    return (
        f"| {name} | {pct(pooled.mean, True)} | ± {100 * pooled.ci95:.2f}{task_mark} | "
        f"{' / '.join(f'{100 * x:+.2f}' for x in per_seed)} (seeds {','.join(map(str, seeds))}) | "
        f"{pct(m, True)} ± {pct(h)}{seed_mark} |"
    )


def seed_mean(row: dict) -> float:
    accs = test_accs(row)
    return mean(mean(a) for a in accs.values()) if accs else math.nan


def against_references(regime: str, rows: dict[str, dict]) -> list[str]:
    """Every row against the regime's baseline and against the best row without GWNMO (the best
    seed-mean meta-test accuracy, chosen after the fact: the choice favours that row)."""
    others = {n: r for n, r in rows.items() if not n.startswith("gwnmo") and test_accs(r)}
    best = max(others, key=lambda n: seed_mean(others[n])) if others else None
    lines = [
        "",
        f"Each row against {BASELINE[regime]} and against the best row without GWNMO "
        f"({best}, picked on meta-test after the fact, which favours it):",
        "",
        "| comparison | Δ (points, pooled) | task-level 95% CI | per-seed Δ | seed-level 95% CI |",
        "|---|---|---|---|---|",
    ]
    for ref in dict.fromkeys([BASELINE[regime], best]):
        if ref is None or ref not in rows:
            continue
        lines += [
            diff_line(f"{name} − {ref}", row, rows[ref])
            for name, row in rows.items()
            if name != ref and test_accs(row)
        ]
    return lines


def curve(row: dict) -> list[tuple[float, float]]:
    """Seed 0 at the selected α: (CPU-seconds, meta-val accuracy) at each validation."""
    v = row["seeds"].get(0, (None, None))[0]
    cpu = row_cpu(row)
    if not v or not v.get("history") or math.isnan(cpu):
        return []
    per_step = cpu / max(v["meta_steps"], 1)  # spread evenly over the meta-steps
    return [(e["step"] * per_step, e["val_accuracy"]) for e in v["history"]]


def fine_tuning_config(cell: Path, suite: dict) -> RunConfig | None:
    """The run configuration of a seed-0 fine-tuning cell (a fixed-init SGD/Adam row without
    overrides, which learns nothing and keeps no config.json), rebuilt as the protocol builds it;
    ``None`` if the rebuilt cell's folder name is not ``cell``'s."""
    m = CELL.match(cell.name)
    if not m or not m["lr"] or m["regime"] != "fixed" or m["row"] not in ("sgd", "adam"):
        return None
    shared = {k: v for k, v in suite.items() if k not in ("test_tasks", "grid_points")}
    base = protocol_base(**shared, skip_integrity_check=True)
    rebuilt = Cell(
        Source("mixed"), 1, Variant(m["row"], m["row"]), "fixed", (("inner_lr", float(m["lr"])),), 0
    )
    return rebuilt.config(base) if rebuilt.key == cell.name else None


def test_grid(folder: Path, suite: dict) -> None:
    """Score every finished seed-0 cell of ``folder`` on meta-test (cached in test.json, the
    protocol's own cache: a cell still training is not scored, or the protocol would later take
    its half-trained score as the finished cell's). Meta-trained cells are scored from their
    ``best.pt``; fine-tuning cells, which learn nothing, by fine-tuning on the meta-test tasks."""
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint, evaluate_method

    for cell in sorted((folder / "cells").glob("*-s0")):
        val = read(cell / "val.json")
        if (cell / "test.json").exists() or val is None:
            continue
        if (cell / "best.pt").exists():
            ev = evaluate_checkpoint(
                cell / "best.pt",
                skip_integrity_check=True,
                tasks=suite["test_tasks"],
                device="cpu",
                seed=TEST_SEED,
                progress=False,
            )
        elif not val.get("meta_trained") and (cfg := fine_tuning_config(cell, suite)):
            ev = evaluate_method(cfg, tasks=suite["test_tasks"], seed=TEST_SEED, progress=False)
        else:
            continue
        ev.pop("text", None)
        rec = {"cell": cell.name, "eval": ev, "seconds": None}
        (cell / "test.json").write_text(json.dumps(rec, indent=2), encoding="utf-8")


def rank_diagnostic(rows: dict[str, dict]) -> str | None:
    pairs = [
        (val["val_accuracy"], test["eval"]["accuracy_mean"])
        for row in rows.values()
        for (lr, seed), (_, val, test) in row["cells"].items()
        if seed == 0 and test and test.get("eval") and val.get("val_accuracy") is not None
    ]
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    rho = float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
    return (
        f"Meta-val against meta-test over the {len(pairs)} seed-0 cells scored on both "
        f"(diagnostic, after selection): Spearman ρ = {rho:.2f}."
    )


def regime_section(study: Path, regime: str, grid: bool, curves: dict) -> list[str]:
    folder = study / f"{regime}-1shot"
    suite = read(folder / "suite.json") or {}
    if grid and suite:
        test_grid(folder, suite)
    rows = collect(folder)
    if not rows:
        return [f"## {regime} init: not run", ""]
    ref = rows.get(COMPUTE_REF[regime])
    ref_cpu = row_cpu(ref) if ref else math.nan
    lines = [
        f"## {regime} init (mixed, 5-way 1-shot)",
        "",
        f"{suite.get('meta_steps')} meta-steps, {suite.get('val_tasks')} meta-val tasks, "
        f"{suite.get('test_tasks')} meta-test tasks per seed. (edge) = the selected α is at the "
        "edge of the grid run so far (tuning not finished).",
        "",
        "| row | seed-0 grid (α: meta-val %) | α | meta-test per seed (%) | seed mean ± t-CI (%) "
        f"| pooled ± CI (%) | CPU-s / run | CPU vs {COMPUTE_REF[regime]} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [row_line(name, row, ref_cpu) for name, row in rows.items()]
    lines += [
        "",
        "Decomposition (paired on the same meta-test tasks; the seed-level interval is the "
        "primary mark, **✓✓** when it excludes 0; the task-level CI is secondary, **✓**):",
        "",
        "| part | Δ (points, pooled) | task-level 95% CI | per-seed Δ | seed-level 95% CI |",
        "|---|---|---|---|---|",
    ]
    lines += [diff_line(n, rows.get(a), rows.get(b)) for n, a, b in DECOMPOSITION[regime]]
    lines += against_references(regime, rows)
    for name, row in rows.items():
        if points := curve(row):
            curves[name] = points
    ref_curve = curves.get(COMPUTE_REF[regime])
    if ref_curve:
        budget = ref_curve[-1][0]
        lines += [
            "",
            f"Best meta-val accuracy within {COMPUTE_REF[regime]}'s CPU budget ({budget:.0f} "
            "CPU-s, seed 0):",
            "",
        ]
        for name in rows:
            c = [acc for t, acc in curves.get(name, []) if t <= budget * 1.0001]
            lines.append(
                f"- {name}: " + (f"{100 * max(c):.1f}%" if c else "no validation within it")
            )
    diag = rank_diagnostic(rows)
    return lines + (["", diag] if diag else []) + [""]


def pinned_section(
    study: Path, folder: str, title: str, comparisons: list, curves: dict
) -> list[str]:
    """Rows run at one pinned α in ``folder`` (a study script's output), paired with the study's
    cells on the same meta-test tasks."""
    folders = {"study": study / "learned-1shot", folder: study / f"{folder}-1shot"}
    rows = {k: collect(f) for k, f in folders.items()}
    if not rows[folder]:
        return [f"## {title}: not run", ""]
    ref = rows["study"].get("maml [learned]")
    ref_cpu = row_cpu(ref) if ref else math.nan
    suite = read(folders[folder] / "suite.json") or {}
    lines = [
        f"## {title} (learned init, mixed, 5-way 1-shot)",
        "",
        f"Each row at one α (its selection above); {suite.get('val_tasks')} meta-val and "
        f"{suite.get('test_tasks')} meta-test tasks per seed, the study's tasks.",
        "",
        "| row | seed-0 grid (α: meta-val %) | α | meta-test per seed (%) | seed mean ± t-CI (%) "
        "| pooled ± CI (%) | CPU-s / run | CPU vs maml [learned] (100 steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [row_line(n, row, ref_cpu, grid_run=False) for n, row in rows[folder].items()]
    lines += [
        "",
        "| comparison | Δ (points, pooled) | task-level 95% CI | per-seed Δ | seed-level 95% CI |",
        "|---|---|---|---|---|",
    ]
    lines += [
        diff_line(name, rows[fa].get(ra), rows[fb].get(rb))
        for name, (fa, ra), (fb, rb) in comparisons
    ]
    for name, row in rows[folder].items():
        if name not in rows["study"] and (points := curve(row)):
            curves[name] = points
    return lines + [""]


def main(study: Path, grid: bool = False) -> None:
    lines = ["# End-to-end study: what GWNMO's gain is made of", ""]
    curves: dict[str, list[tuple[float, float]]] = {}
    for regime in ("learned", "fixed"):
        lines += regime_section(study, regime, grid, curves)
    lines += pinned_section(study, "equal-compute", "Equal compute", EQUAL_COMPUTE, curves)
    lines += pinned_section(study, "judge", "The sampled judge", JUDGE, curves)
    (study / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, pts in curves.items():
            style = "--" if name.endswith("[fixed]") else "-"
            ax.plot(*zip(*pts, strict=True), style, marker="o", label=name)
        ax.set_xlabel("meta-training CPU-seconds (seed 0, selected α)")
        ax.set_ylabel("meta-val accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(study / "val_vs_cpu.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", nargs="?", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--test-grid", action="store_true", help="score seed-0 grid cells first")
    args = ap.parse_args()
    if not args.study.is_dir():
        ap.error(f"{args.study} is not a study folder")
    main(args.study, args.test_grid)
