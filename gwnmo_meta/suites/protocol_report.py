"""The protocol suite's statistics and reports: pooled accuracies, paired differences, the budget.

A row's accuracy pools the tasks of all its seeds (mean ± 95% t-CI over tasks); paired differences
(``stats.paired_diff_ci95``) compare two rows task by task on those pooled tasks, and the per-seed
means are compared too (:func:`paired_difference`). :func:`write_protocol_reports` writes
``results.json``, ``results.md`` and ``steps.png``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import METHODS
from gwnmo_meta.suites.cells import SHORT_NAMES
from gwnmo_meta.suites.protocol_runner import (
    is_number,
    is_test_record,
    is_val_record,
    read_record,
    write_json,
    write_text,
)

if TYPE_CHECKING:
    from gwnmo_meta.suites.protocol import ProtocolSuite


def _row_id(row: dict[str, Any]) -> str:
    return row["variant"] if row["regime"] == "any" else f"{row['variant']} [{row['regime']}]"


def _pooled(row: dict[str, Any], key: str = "task_accuracies") -> list[float] | None:
    if any(t.get("eval") is None for t in row["seeds"]):
        return None
    return [v for t in row["seeds"] for v in t["eval"][key]]


def cell_budget(out: Path) -> dict[str, Any]:
    """What the cells under ``out/cells`` cost: runs, meta-steps, scored configurations, seconds."""
    budget = {
        "meta_trained_cells": 0,
        "meta_steps": 0,
        "scored_cells": 0,
        "cell_seconds": 0.0,
        "meta_val_cpu_seconds": 0.0,  # CPU time of meta-training + meta-val (cells that record it)
    }
    for val in sorted((out / "cells").glob("*/val.json")):
        rec = read_record(val, is_val_record, warn=False)
        if rec is None:  # a damaged file of a cell outside this suite: not counted
            continue
        budget["scored_cells"] += 1
        budget["meta_trained_cells"] += bool(rec.get("meta_trained"))
        budget["meta_steps"] += _count(rec, "meta_steps")
        budget["cell_seconds"] += _count(rec, "seconds")
        budget["meta_val_cpu_seconds"] += _count(rec, "cpu_seconds")
        test = read_record(val.with_name("test.json"), is_test_record, warn=False)
        if test is not None:
            budget["cell_seconds"] += _count(test, "seconds")
    budget["cell_seconds"] = round(budget["cell_seconds"], 1)
    budget["meta_val_cpu_seconds"] = round(budget["meta_val_cpu_seconds"], 1)
    return budget


def _count(rec: dict[str, Any], key: str) -> float:
    return rec[key] if is_number(rec.get(key)) else 0


def paired_difference(a: list[float], b: list[float], n_seeds: int) -> dict[str, Any]:
    """Paired difference a − b over the pooled tasks, and over the per-seed means.

    The tasks of each seed are consecutive blocks of equal size in both lists. ``significant``:
    the task-level CI excludes 0; ``seed_significant``: so does the Student-t CI of the per-seed
    mean differences (n = seeds; it also covers the seed-to-seed variation of meta-training).
    """
    from gwnmo_meta.evaluation.stats import paired_diff_ci95

    d = paired_diff_ci95(a, b)
    out = {"mean": d.mean, "ci95": d.ci95, "significant": d.significant}
    if n_seeds >= 2:
        k = len(a) // n_seeds
        per_seed = [
            math.fsum(a[i * k : (i + 1) * k]) / k - math.fsum(b[i * k : (i + 1) * k]) / k
            for i in range(n_seeds)
        ]
        s = paired_diff_ci95(per_seed, [0.0] * n_seeds)
        out.update(seed_ci95=s.ci95, seed_significant=s.significant)
    return out


def summarise(
    suite: ProtocolSuite, groups: list[dict[str, Any]], out: Path, wall_s: float
) -> dict[str, Any]:
    """Pooled means, paired differences (vs SGD fine-tuning, vs MAML, all pairs) and the budget."""
    out_groups = [_summarise_group(g) for g in groups]
    budget = cell_budget(out)
    budget["wall_seconds_this_invocation"] = round(wall_s, 1)
    return {
        "settings": suite.settings(),
        "base": suite.base.to_dict(),
        "budget": budget,
        "groups": out_groups,
    }


def _summarise_group(g: dict[str, Any]) -> dict[str, Any]:
    """One (source, shots) group: its table, the paired differences and the best row."""
    table, pooled = [], {}
    digests = set()
    for row in g["rows"]:
        for t in row["seeds"]:
            if t.get("eval"):
                digests.add((t["seed"], t["eval"]["tasks_digest"]))
        entry, accs = _table_entry(row)
        if accs is not None:
            pooled[entry["row"]] = accs
        table.append(entry)
    if len({d for _, d in digests}) > len({s for s, _ in digests}):
        raise ConfigError(f"{g['source']} {g['shots']}-shot: rows were scored on different tasks")
    n_seeds = len(g["seeds"])
    refs = {n: f"{n} [{m.paired_baseline}]" for n, m in METHODS.items() if m.paired_baseline}
    for entry in table:
        for name, ref in refs.items():
            if entry["row"] in pooled and ref in pooled:
                entry[f"vs_{name}"] = paired_difference(pooled[entry["row"]], pooled[ref], n_seeds)
    pairs = []
    ids = list(pooled)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            pairs.append({"a": a, "b": b, **paired_difference(pooled[a], pooled[b], n_seeds)})
    best = max(pooled, key=lambda r: math.fsum(pooled[r]) / len(pooled[r]), default=None)
    best_vs_proto = None
    proto = next((n for n, m in METHODS.items() if m.no_training_reference), None)
    if best is not None and proto in pooled and best != proto:
        best_vs_proto = {"best": best, **paired_difference(pooled[best], pooled[proto], n_seeds)}
    return {
        "source": g["source"],
        "label": g["label"],
        "shots": g["shots"],
        "seeds": g["seeds"],
        "rows": table,
        "pairs": pairs,
        "significant_pairs": sum(p["significant"] for p in pairs),
        "seed_significant_pairs": sum(p.get("seed_significant", False) for p in pairs),
        "best": best,
        "best_vs_prototype": best_vs_proto,
    }


def _table_entry(row: dict[str, Any]) -> tuple[dict[str, Any], list[float] | None]:
    """A row's line of the table, and its pooled task accuracies (``None``: a seed diverged)."""
    from gwnmo_meta.evaluation.stats import mean_ci95

    accs = _pooled(row)
    entry = {
        "row": _row_id(row),
        "variant": row["variant"],
        "method": row["method"],
        "regime": row["regime"],
        "hparams": row["hparams"],
        "at_edge": row["at_edge"],
        "grid": [(t["hparams"], t["val_accuracy"]) for t in row["tried"]],
        "val_accuracy": row["seeds"][0]["val_accuracy"],
        "seed_accuracy": {
            t["seed"]: (t["eval"]["accuracy_mean"] if t.get("eval") else None) for t in row["seeds"]
        },
    }
    if accs is not None:
        acc = mean_ci95(accs)
        losses = _pooled(row, "task_losses")
        assert losses is not None  # the same seeds' evaluations as accs: none diverged
        loss = mean_ci95(losses)
        entry.update(
            accuracy_mean=acc.mean,
            accuracy_ci95=acc.ci95,
            loss_mean=loss.mean,
            tasks=acc.n,
            step_accuracy=_mean_curves(row, "step_accuracy_mean"),
            step_loss=_mean_curves(row, "step_loss_mean"),
        )
    return entry, accs


def _mean_curves(row: dict[str, Any], key: str) -> list[float]:
    curves = [t["eval"][key] for t in row["seeds"] if t.get("eval") and t["eval"].get(key)]
    if not curves or len({len(c) for c in curves}) != 1:
        return []
    return [math.fsum(c) / len(c) for c in zip(*curves, strict=True)]


def _fmt_diff(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    mark = " **✓✓**" if d.get("seed_significant") else (" **✓**" if d["significant"] else "")
    return f"{100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f}{mark}"


def write_protocol_reports(results: dict[str, Any], out: Path) -> list[Path]:
    """``results.json``, ``results.md`` and ``steps.png`` (accuracy/loss against inner steps)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    write_json(json_path, results)
    s, b = results["settings"], results["budget"]
    lines = [
        "# Benchmark suite `protocol`",
        "",
        f"5-way tasks, {s['query']} queries per class; {s['test_tasks']} meta-test tasks per seed; "
        f"{s['meta_steps']} meta-steps × {s['meta_batch']} tasks, meta-lr {s['meta_lr']:g} (fixed for "
        f"every meta-learner), validation every {s['val_every']} steps on {s['val_tasks']} meta-val "
        f"tasks; {s['inner_steps']} inner steps; "
        + (
            "conv4 + linear head adapted end to end from images (`--adapt all`); "
            if s.get("adapt") == "all"
            else f"head "
            f"{'linear' if not s['head_hidden'] else 'two-layer, hidden ' + str(s['head_hidden'])}"
            f"; backbone {s['backbone']}; "
        )
        + f"M = {s['weighting']} (hidden {s['weighting_hidden']}).",
        "",
        (
            "Tuning: none (one grid point): every row uses its method's default step size "
            "(`registry.METHODS`), so rows differ in method only, not in tuning budget."
            if s["grid_points"] == 1
            else f"Tuning: {s['grid_points']} log-spaced values (half-decade ladder) per "
            "hyperparameter, extended while the best is at an edge; selected on seed 0's "
            "meta-val; 'edge' marks a value still at the edge after the extensions."
        )
        + " Accuracy: mean ± 95% CI over the pooled "
        "tasks of all seeds. Δ: paired difference (percentage points) on the same tasks, ± 95% CI; "
        "**✓** = the CI excludes 0; **✓✓** = the Student-t CI of the per-seed mean differences "
        "excludes 0 as well (several seeds only: it also covers seed-to-seed variation).",
        "",
        f"Budget: {b['meta_trained_cells']} meta-training runs ({b['meta_steps']} meta-steps), "
        f"{b['scored_cells']} configurations scored on meta-val, {b['cell_seconds']:.0f} s of cell "
        "time (all cells in this folder).",
    ]
    for g in results["groups"]:
        lines += [
            "",
            f"## {g['label']}, {g['shots']}-shot (seeds {', '.join(map(str, g['seeds']))})",
            "",
            "| row | accuracy (%) | Δ vs SGD fine-tuning | Δ vs MAML | per-seed (%) | selected | val (%) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(g["rows"], key=lambda r: -r.get("accuracy_mean", -1)):
            acc = (
                f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_ci95']:.2f}"
                if "accuracy_mean" in r
                else "diverged"
            )
            seeds = " / ".join(
                "–" if v is None else f"{100 * v:.1f}" for v in r["seed_accuracy"].values()
            )
            hp = ", ".join(f"{SHORT_NAMES.get(k, k)} {v:g}" for k, v in r["hparams"].items()) or "–"
            if r["at_edge"]:
                hp += " (edge: " + ", ".join(SHORT_NAMES.get(k, k) for k in r["at_edge"]) + ")"
            val = "–" if r["val_accuracy"] is None else f"{100 * r['val_accuracy']:.1f}"
            lines.append(
                f"| {r['row']} | {acc} | {_fmt_diff(r.get('vs_sgd'))} | {_fmt_diff(r.get('vs_maml'))} "
                f"| {seeds} | {hp} | {val} |"
            )
        bp = g["best_vs_prototype"]
        lines += [
            "",
            f"Significant pairs: {g['significant_pairs']} of {len(g['pairs'])} on the pooled "
            f"tasks ({g['seed_significant_pairs']} also across seeds). Best row: "
            f"{g['best']}" + (f"; vs prototype {_fmt_diff(bp)}." if bp else "."),
        ]
    write_text(md_path, "\n".join(lines) + "\n")
    return [json_path, md_path, plot_steps(results, out / "steps.png")]


def plot_steps(results: dict[str, Any], path: Path) -> Path:
    """Query accuracy and loss against inner steps, per row, one panel pair per (source, shots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = results["groups"]
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.2 * len(groups)), squeeze=False)
    for (ax_acc, ax_loss), g in zip(axes, groups, strict=True):
        for r in g["rows"]:
            acc, loss = r.get("step_accuracy") or [], r.get("step_loss") or []
            style = "--" if r["regime"] == "fixed" else "-"
            if len(acc) == 1:  # no inner steps: a horizontal reference line
                ax_acc.axhline(
                    100 * acc[0],
                    color="grey" if METHODS[r["method"]].no_training_reference else "black",
                    ls=":",
                    lw=1,
                    label=r["row"],
                )
                continue
            if acc:
                ax_acc.plot(
                    range(len(acc)), [100 * a for a in acc], style, marker=".", label=r["row"]
                )
                ax_loss.plot(range(len(loss)), loss, style, marker=".", label=r["row"])
        ax_acc.set_title(f"{g['label']}, {g['shots']}-shot", fontsize=9)
        ax_acc.set_xlabel("inner step")
        ax_acc.set_ylabel("query accuracy (%)")
        ax_loss.set_xlabel("inner step")
        ax_loss.set_ylabel("query loss")
        ax_loss.set_yscale("log")
    if groups:
        axes[0][0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
