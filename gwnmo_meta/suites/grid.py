"""Benchmark suites: many (dataset × shots × method × schedule × inner-lr) cells on shared tasks.

Every cell meta-trains with the same seed, the same backbone features and the same task streams
(meta-train, meta-val and meta-test samplers are seeded identically for every method), then its
best-by-val checkpoint is evaluated on meta-test tasks. Each method gets the same tuning budget:
one cell per inner step size in its grid (the same number of values for every method), and the
value with the best meta-val accuracy is the one reported. Cells are resumable: a finished cell
(``result.json`` present) is never re-run, an unfinished one resumes from its ``last.pt``.
Cells are independent: ``jobs > 1`` runs them in that many worker processes (spawned, each with
its share of the CPU threads) after the parent has filled the feature cache, and collects the
records in cell order, so the reports are those of a serial run.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gwnmo_meta.config import RunConfig
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.io.atomic import (
    atomic_open,
    atomic_write_json,
    atomic_write_text,
    check_writable_file,
    remove_stale_temps,
)
from gwnmo_meta.io.interrupts import Interrupted
from gwnmo_meta.registry import METHODS, SCHEDULES, Registry
from gwnmo_meta.suites.cells import Cell, Source, Variant


def _scheduled(method: str) -> bool:
    """Whether ``method``'s cells vary over schedules (the learned optimizers)."""
    return METHODS[method].learned_optimizer


def _reference(method: str) -> bool:
    """Whether ``method`` is a reference row (one cell, no step size, no meta-training)."""
    return METHODS[method].engine == "reference"


# Inner step-size grids per method (MethodInfo.lr_grid in gwnmo_meta/registry.py).
LR_GRIDS: dict[str, tuple[float, ...]] = {n: m.lr_grid for n, m in METHODS.items() if m.lr_grid}
REPORTS = ("results.csv", "results.json", "results.md", "accuracy.png", "curves.png")


def cell_id(cell: Cell) -> str:
    """The grid suites' name of a cell (its folder, with the suite's suffixes; :func:`run_cell`)."""
    sched = f"-{cell.variant.schedule}" if _scheduled(cell.method) else ""
    if _reference(cell.method):  # no step size, nothing learned
        return f"{cell.dataset}-{cell.shots}shot-{cell.method}"
    init = "" if cell.learn_init else "-randinit"
    return f"{cell.dataset}-{cell.shots}shot-{cell.method}{sched}{init}-lr{cell.inner_lr:g}"


@dataclass
class Suite:
    """A named grid of cells plus the shared run settings."""

    name: str
    cells: list[Cell]
    base: RunConfig
    test_tasks: int
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _variants(methods: tuple[str, ...], schedules: tuple[str, ...]) -> list[Variant]:
    """One row per learned optimizer and schedule, one per other method (its default schedule,
    MAML's objective)."""
    out: list[Variant] = []
    for m in methods:
        if _scheduled(m):
            out.extend(Variant(f"{m} {s}", m, (("schedule", s),)) for s in schedules)
        else:
            out.append(Variant(m, m, (("schedule", None),)))
    return out


def grid_cells(
    datasets: tuple[str, ...],
    shots: tuple[int, ...],
    methods: tuple[str, ...],
    schedules: tuple[str, ...],
    lr_values: int,
) -> list[Cell]:
    """The full grid; ``lr_values`` takes the first N values of each method's grid (N equal for all)."""
    cells = []
    for ds in datasets:
        for k in shots:
            for v in _variants(methods, schedules):
                regime = "learned" if METHODS[v.method].suite_learn_init else "fixed"
                lrs = (None,) if _reference(v.method) else LR_GRIDS[v.method][:lr_values]
                for lr in lrs:  # a reference row: one cell, no step size
                    cells.append(Cell(Source(ds), k, v, regime, (("inner_lr", lr),), None, (ds,)))
    return cells


def _in_suite(registry: Registry[Any], suite: str) -> tuple[str, ...]:
    return registry.names(lambda info: suite in info.suites)


def _preset(name: str, base: RunConfig) -> tuple[dict[str, Any], RunConfig]:
    """The named suite's settings and its base (with the suite's validation schedule)."""
    d: dict[str, Any]
    if name == "quick":
        d = dict(
            datasets=("mnist",),
            shots=(1,),
            methods=_in_suite(METHODS, "quick"),
            schedules=_in_suite(SCHEDULES, "quick"),
            meta_steps=60,
            test_tasks=100,
            lr_values=1,
        )
        return d, replace(base, val_every=30, val_tasks=50)
    if name not in ("main", "transfer"):
        raise ConfigError(f"unknown suite {name!r}; choose quick, main or transfer")
    d = dict(
        datasets=("mnist", "fmnist", "cifar10"),
        shots=(1, 5) if name == "main" else (1,),
        methods=_in_suite(METHODS, name),
        schedules=_in_suite(SCHEDULES, name),
        meta_steps=200,
        test_tasks=600,
        lr_values=2,
    )
    return d, replace(base, val_every=100, val_tasks=100)


def build_suite(
    name: str,
    *,
    datasets: tuple[str, ...] | None = None,
    shots: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
    schedules: tuple[str, ...] | None = None,
    meta_steps: int | None = None,
    test_tasks: int | None = None,
    lr_values: int | None = None,
    base: RunConfig | None = None,
) -> Suite:
    """Named suites: ``quick`` (minutes), ``main`` (issue table), ``transfer`` (3×3 cross-dataset)."""
    d, base = _preset(name, base or RunConfig())
    given = dict(
        datasets=datasets,
        shots=shots,
        methods=methods,
        schedules=schedules,
        meta_steps=meta_steps,
        test_tasks=test_tasks,
        lr_values=lr_values,
    )
    d.update({k: v for k, v in given.items() if v is not None})
    for m in d["methods"]:
        METHODS.check(m, "--methods")
    for s in d["schedules"]:
        SCHEDULES.check(s, "--schedules")
    if not 1 <= d["lr_values"] <= 3:
        raise ConfigError("--lr-values must be 1, 2 or 3")
    for key in ("meta_steps", "test_tasks"):
        if d[key] <= 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be positive, got {d[key]}")
    for k in d["shots"]:
        replace(base, shots=k, meta_steps=d["meta_steps"]).validate()
    base = replace(base, meta_steps=d["meta_steps"])
    cells = grid_cells(d["datasets"], d["shots"], d["methods"], d["schedules"], d["lr_values"])
    if name == "transfer":
        # Every cell's checkpoint is evaluated on every dataset: off the diagonal with the source
        # dataset's backbone and step size for all methods alike (same features, same tasks), so
        # GWNMO's transfer is compared with SGD/Adam fine-tuning under identical conditions.
        all_ds = tuple(d["datasets"])
        cells = [replace(c, eval_datasets=all_ds) for c in cells]
    return Suite(
        name,
        cells,
        base,
        d["test_tasks"],
        extra={k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()},
    )


def run_cell(cell: Cell, suite: Suite, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Meta-train and evaluate one cell (resuming it if a previous run was cut off)."""
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint
    from gwnmo_meta.training.trainer import meta_train

    head = f"-h{suite.base.head_hidden}" if suite.base.head_hidden else ""
    m_net, default = "", RunConfig()
    if _scheduled(cell.method):  # M's settings key GWNMO cells only (baselines have no M)
        m_net += f"-{suite.base.weighting}" if suite.base.weighting != default.weighting else ""
        m_net += (
            f"-m{suite.base.weighting_hidden}"
            if suite.base.weighting_hidden != default.weighting_hidden
            else ""
        )
    if (
        suite.base.task_batch and METHODS[cell.method].engine != "learn2learn"
    ):  # learn2learn cells are unaffected;
        m_net += "-tb"  # unsuffixed cells (e.g. the committed ones) adapted one task at a time
    head += "-all" if suite.base.adapt == "all" else ""  # conv4 adapted end to end
    cell_dir = out / "cells" / f"{cell_id(cell)}{m_net}-steps{suite.base.meta_steps}{head}"
    done = cell_dir / "result.json"
    record = read_cell_result(done)
    if record is not None:
        return record
    cfg = cell.config(suite.base)
    if _reference(cell.method):
        return _reference_cell(cell, cfg, suite, done, progress)
    t0 = time.perf_counter()
    result = meta_train(cfg, cell_dir, resume="auto", progress=progress, check_test=True)
    if result.interrupted:
        raise Interrupted(result.signal or signal.SIGINT)  # the trainer sets it
    train_s = time.perf_counter() - t0
    evals = []
    for ds in cell.eval_datasets:
        ev = evaluate_checkpoint(
            cell_dir / "best.pt",
            dataset=ds,
            data_root=cfg.data_root,
            skip_integrity_check=cfg.skip_integrity_check,
            tasks=suite.test_tasks,
            device=cfg.device,
            progress=progress,
        )
        ev.pop("text")
        evals.append(ev)
    record = {
        "cell": cell_id(cell),
        "variant": cell.variant.name,
        "train_dataset": cell.dataset,
        "shots": cell.shots,
        "method": cell.method,
        "schedule": cell.variant.schedule if _scheduled(cell.method) else "",
        "inner_lr": cell.inner_lr,
        "learn_init": cell.learn_init,
        "meta_steps": cfg.meta_steps,
        "val_accuracy": result.best_val_accuracy,
        "train_seconds": round(train_s, 2),
        "history": result.history,
        "evals": evals,
    }
    atomic_write_json(done, record)
    return record


def _reference_cell(
    cell: Cell, cfg: RunConfig, suite: Suite, done: Path, progress: bool
) -> dict[str, Any]:
    """A reference row: scored on meta-val and meta-test (seed 1234) without meta-training."""
    from gwnmo_meta.evaluation.evaluate import evaluate_method
    from gwnmo_meta.io.atomic import atomic_write_json

    if cell.eval_datasets != (cell.dataset,):
        raise ConfigError(
            f"--methods {cell.method}: reference rows are scored on their own dataset"
        )
    val = evaluate_method(
        cfg, tasks=cfg.val_tasks, seed=cfg.seed + 1, part="val", progress=progress
    )
    ev = evaluate_method(cfg, tasks=suite.test_tasks, progress=progress)
    ev.pop("text")
    record = {
        "cell": cell_id(cell),
        "variant": cell.variant.name,
        "train_dataset": cell.dataset,
        "shots": cell.shots,
        "method": cell.method,
        "schedule": "",
        "inner_lr": None,
        "learn_init": cell.learn_init,
        "meta_steps": 0,
        "val_accuracy": val["accuracy_mean"],
        "train_seconds": 0.0,
        "history": [],
        "evals": [ev],
    }
    done.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(done, record)
    return record


CELL_KEYS = ("cell", "variant", "train_dataset", "shots", "method", "learn_init", "evals")
EVAL_KEYS = ("dataset", "ways", "query", "accuracy_mean", "accuracy_ci95", "loss_mean", "tasks")


def read_cell_result(path: Path) -> dict[str, Any] | None:
    """A finished cell's ``result.json``; ``None`` if absent, or unreadable (then, with a warning
    on stderr, the cell is recomputed: resumed from its last.pt, so only the evaluation reruns)."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        ok = (
            isinstance(record, dict)
            and all(k in record for k in CELL_KEYS)
            and isinstance(record["evals"], list)
            and all(isinstance(e, dict) and all(k in e for k in EVAL_KEYS) for e in record["evals"])
        )
    except (OSError, ValueError):
        ok = False
    if ok:
        return record
    print(f"warning: {path} is unreadable or incomplete; recomputing that cell", file=sys.stderr)
    return None


def select_best(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (train dataset, shots, variant, learn_init): the inner-lr cell with the best meta-val accuracy."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in records:
        key = (r["train_dataset"], r["shots"], r["variant"], r["learn_init"])
        score = r["val_accuracy"] if r["val_accuracy"] is not None else -1.0
        if key not in best or score > (best[key]["val_accuracy"] or -1.0):
            best[key] = r
    return list(best.values())


def result_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten the selected cells into one row per (cell, evaluation dataset)."""
    rows = []
    for r in select_best(records):
        for ev in r["evals"]:
            rows.append(
                {
                    "train_dataset": r["train_dataset"],
                    "test_dataset": ev["dataset"],
                    "ways": ev["ways"],
                    "shots": r["shots"],
                    "query": ev["query"],
                    "variant": r["variant"],
                    "method": r["method"],
                    "schedule": r["schedule"],
                    "inner_lr": r["inner_lr"],
                    "learn_init": r["learn_init"],
                    "meta_steps": r["meta_steps"],
                    "val_accuracy": r["val_accuracy"],
                    "accuracy_mean": ev["accuracy_mean"],
                    "accuracy_ci95": ev["accuracy_ci95"],
                    "loss_mean": ev["loss_mean"],
                    "loss_ci95": ev["loss_ci95"],
                    "tasks": ev["tasks"],
                    "train_seconds": r["train_seconds"],
                }
            )
    rows.sort(key=lambda x: (x["train_dataset"], x["test_dataset"], x["shots"], x["variant"]))
    return rows


def write_reports(
    rows: list[dict[str, Any]], records: list[dict[str, Any]], suite: Suite, out: Path
) -> list[Path]:
    """results.csv / results.json / results.md and accuracy.png / curves.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.csv", out / "results.json", out / "results.md"]
    with atomic_open(paths[0], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_json(
        paths[1],
        {
            "suite": suite.name,
            "settings": suite.extra,
            "base": suite.base.to_dict(),
            "rows": rows,
            "cells": [{k: v for k, v in r.items() if k != "history"} for r in records],
        },
    )
    lines = [
        f"# Benchmark suite `{suite.name}`",
        "",
        f"{suite.test_tasks} meta-test tasks per row; accuracy mean ± 95% CI; inner lr chosen by meta-val accuracy "
        f"from an equal-size grid per method; {suite.base.meta_steps} meta-steps × {suite.base.meta_batch} tasks; "
        f"backbone {suite.base.backbone}; target head "
        f"{'linear' if not suite.base.head_hidden else f'two-layer, hidden {suite.base.head_hidden}'}; "
        f"weighting {suite.base.weighting} (hidden {suite.base.weighting_hidden}); seed {suite.base.seed}"
        f"; {'task-batched inner loops' if suite.base.task_batch else 'one task at a time (--no-task-batch)'}.",
        "",
        "| train → test | shots | method | inner lr | accuracy (%) | query loss | val acc (%) | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lr = "–" if r["inner_lr"] is None else format(r["inner_lr"], "g")
        lines.append(
            f"| {r['train_dataset']} → {r['test_dataset']} | {r['shots']} | {r['variant']} | {lr} | "
            f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_ci95']:.2f} | {r['loss_mean']:.3f} | "
            f"{100 * (r['val_accuracy'] or 0):.1f} | {r['train_seconds']:.0f} |"
        )
    atomic_write_text(paths[2], "\n".join(lines) + "\n")
    paths += plot_results(rows, records, out)
    return paths


def plot_results(
    rows: list[dict[str, Any]], records: list[dict[str, Any]], out: Path
) -> list[Path]:
    """Accuracy bars with 95% CI error bars per (train → test, shots); meta-val curves of selected cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["train_dataset"], r["test_dataset"], r["shots"]) for r in rows})
    variants = sorted({r["variant"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * max(1, len(variants)) / 3), 4.5))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        xs, ys, es = [], [], []
        for g, key in enumerate(groups):
            match = [
                r
                for r in rows
                if (r["train_dataset"], r["test_dataset"], r["shots"]) == key and r["variant"] == v
            ]
            if match:
                xs.append(g + i * width)
                ys.append(100 * match[0]["accuracy_mean"])
                es.append(100 * match[0]["accuracy_ci95"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=v)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(
        [f"{a}\n→ {b}\n{k}-shot" if a != b else f"{a}\n{k}-shot" for a, b, k in groups], fontsize=8
    )
    ax.set_ylabel("meta-test accuracy (%) ± 95% CI")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    acc_png = out / "accuracy.png"
    with atomic_open(acc_png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in select_best(records):
        pts = [
            (h["step"], 100 * h["val_accuracy"])
            for h in r.get("history", [])
            if "val_accuracy" in h
        ]
        if pts:
            ax.plot(
                *zip(*pts, strict=False),
                marker="o",
                ms=3,
                label=f"{r['train_dataset']} {r['shots']}-shot {r['variant']}",
            )
    ax.set_xlabel("meta-step")
    ax.set_ylabel("meta-val accuracy (%)")
    if ax.lines:  # rows without meta-training have no validation curve
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    curves_png = out / "curves.png"
    with atomic_open(curves_png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return [acc_png, curves_png]


def _warm_cache(suite: Suite, progress: bool) -> None:
    """Compute (or load) every dataset's features once, so parallel cells only read the cache."""
    from gwnmo_meta.device import resolve_device
    from gwnmo_meta.training.run_data import load_run_data

    device = resolve_device(suite.base.device)
    pairs = {(c.dataset, e) for c in suite.cells for e in c.eval_datasets}
    for ds, ev in sorted(pairs):
        cfg = replace(suite.base, dataset=ds)
        load_run_data(cfg, device, eval_dataset=None if ev == ds else ev, progress=progress)


def _init_worker(threads: int) -> None:
    import os

    # read when (and only if) the worker imports torch: a finished cell's worker never does
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def _run_parallel(suite: Suite, out: Path, jobs: int, bar: Any) -> list[dict[str, Any]]:
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    )
    try:
        futures = [pool.submit(run_cell, c, suite, out, progress=False) for c in suite.cells]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            bar.update(len(done))
            for f in done:
                f.result()  # re-raise a cell's error here (the others are cancelled below)
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_suite(
    suite: Suite, out: Path, *, progress: bool = True, jobs: int = 1
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Run (or resume) every cell of ``suite`` and write the reports.

    Args:
        suite: the cells and shared settings.
        out: folder for ``cells/`` and the reports.
        progress: show a progress bar over the cells.
        jobs: worker processes running cells at the same time (1: in this process).

    Returns:
        The report rows and the paths of the written reports.
    """
    from tqdm.auto import tqdm

    from gwnmo_meta.training.distributed import env_world
    from gwnmo_meta.training.run_folder import check_writable

    if env_world().active:
        raise ConfigError(
            "benchmark runs its cells in one process or with --jobs N, not under torchrun"
        )
    if jobs < 1:
        raise ConfigError(f"--jobs must be positive, got {jobs}")
    check_writable(out)
    remove_stale_temps(out)
    for name in REPORTS:  # an unwritable report is refused before hours of training
        check_writable_file(out / name)
    bar = tqdm(
        total=len(suite.cells),
        desc=f"suite {suite.name}",
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        if jobs == 1:
            records = []
            for cell in suite.cells:
                records.append(run_cell(cell, suite, out, progress=False))
                bar.update(1)
        else:
            _warm_cache(suite, progress)
            records = _run_parallel(suite, out, min(jobs, len(suite.cells)), bar)
    rows = result_rows(records)
    return rows, write_reports(rows, records, suite, out)
