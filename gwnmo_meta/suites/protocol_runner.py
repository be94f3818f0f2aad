"""The protocol suite's cells on disk: each runs once, its ``val.json`` and ``test.json`` cached.

:class:`CellRunner` meta-trains (or, for a cell that learns nothing, only scores) a cell and writes
``OUT/cells/KEY/val.json`` (the meta-val score that tuning selects on) and ``test.json`` (the
meta-test scores of the task stream ``TEST_SEED + seed``). A finished file is never recomputed; a
truncated or wrongly shaped one is recomputed, with a warning (:func:`read_record`).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gwnmo_meta.io.interrupts import Interrupted
from gwnmo_meta.suites.cells import Cell

if TYPE_CHECKING:
    from gwnmo_meta.suites.protocol import ProtocolSuite

TEST_SEED = 1234  # meta-test task stream of seed s: TEST_SEED + s (seed 0: evaluate's default)


class CellRunner:
    """Runs cells of a suite under ``out/cells`` (each result cached in its folder)."""

    def __init__(self, suite: ProtocolSuite, out: Path, progress: bool = False):
        self.suite, self.out, self.progress = suite, out, progress
        self.cells_run = 0

    def folder(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.key

    def validate(self, cell: Cell) -> dict[str, Any]:
        """Meta-val score of ``cell`` (meta-training it first when it learns something)."""
        from gwnmo_meta.evaluation.evaluate import evaluate_method
        from gwnmo_meta.training.trainer import TrainingDiverged, meta_train

        path = self.folder(cell) / "val.json"
        cached = read_record(path, is_val_record)
        if cached is not None:
            return cached
        cfg = cell.config(self.suite.base)
        t0, cpu0 = time.perf_counter(), time.process_time()
        rec: dict[str, Any] = {"cell": cell.key, "meta_trained": cell.meta_trained}
        if cell.meta_trained:
            folder = self.folder(cell)
            try:
                res = meta_train(cfg, folder, resume="auto", progress=self.progress)
            except TrainingDiverged as exc:
                rec.update(val_accuracy=None, diverged=str(exc), history=[])
            else:
                if res.interrupted:
                    raise Interrupted(res.signal or signal.SIGINT)  # the trainer sets it
                rec.update(val_accuracy=res.best_val_accuracy, history=res.history)
        else:
            ev = evaluate_method(
                cfg, tasks=cfg.val_tasks, seed=cfg.seed + 1, part="val", progress=self.progress
            )
            rec.update(val_accuracy=ev["accuracy_mean"], history=[])
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        # this process's CPU time (all its threads): the compute a row costs, whatever the load
        rec["cpu_seconds"] = round(time.process_time() - cpu0, 2)
        rec["meta_steps"] = cfg.meta_steps if cell.meta_trained else 0
        write_json(path, rec)
        self.cells_run += 1
        return rec

    def test(self, cell: Cell) -> dict[str, Any]:
        """Meta-test scores of ``cell`` on the task stream ``TEST_SEED + seed``."""
        from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint, evaluate_method

        path = self.folder(cell) / "test.json"
        cached = read_record(path, is_test_record)
        if cached is not None:
            return cached
        val = self.validate(cell)
        cfg = cell.config(self.suite.base)
        assert cell.seed is not None, "a protocol cell runs on a seed of the suite's"
        seed, t0 = TEST_SEED + cell.seed, time.perf_counter()
        if not cell.meta_trained:
            ev = evaluate_method(
                cfg, tasks=self.suite.test_tasks, seed=seed, progress=self.progress
            )
        elif val["val_accuracy"] is None:  # diverged: no checkpoint worth scoring
            ev = None
        else:
            ev = evaluate_checkpoint(
                self.folder(cell) / "best.pt",
                data_root=cfg.data_root,
                skip_integrity_check=cfg.skip_integrity_check,
                tasks=self.suite.test_tasks,
                device=cfg.device,
                seed=seed,
                progress=self.progress,
            )
        if ev is not None:
            ev.pop("text", None)
        rec = {"cell": cell.key, "eval": ev, "seconds": round(time.perf_counter() - t0, 2)}
        write_json(path, rec)
        return rec


def is_number(v: Any) -> bool:
    """A JSON number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(is_number(x) for x in v)


def is_val_record(rec: Any) -> bool:
    """The shape :meth:`CellRunner.validate` writes."""
    return (
        isinstance(rec, dict)
        and isinstance(rec.get("cell"), str)
        and isinstance(rec.get("meta_trained"), bool)
        and (rec.get("val_accuracy") is None or is_number(rec["val_accuracy"]))
        and isinstance(rec.get("history"), list)
    )


def is_test_record(rec: Any) -> bool:
    """The shape :meth:`CellRunner.test` writes (``eval`` ``None``: a diverged cell)."""
    if not (isinstance(rec, dict) and isinstance(rec.get("cell"), str) and "eval" in rec):
        return False
    ev = rec["eval"]
    return ev is None or (
        isinstance(ev, dict)
        and is_number(ev.get("accuracy_mean"))
        and _numbers(ev.get("task_accuracies"))
        and _numbers(ev.get("task_losses"))
        and isinstance(ev.get("tasks_digest"), str)
    )


def read_record(path: Path, ok: Callable[[Any], bool], warn: bool = True) -> dict[str, Any] | None:
    """A cell's ``val.json``/``test.json``; ``None`` if absent, or unreadable or wrongly shaped
    (then, with a warning on stderr unless ``warn`` is false, it is recomputed)."""
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        good = ok(rec)
    except (OSError, ValueError, RecursionError):
        good = False
    if good:
        return rec
    if warn:
        print(f"warning: {path} is unreadable or incomplete; recomputing it", file=sys.stderr)
    return None


def write_json(path: Path, obj: Any) -> None:
    from gwnmo_meta.io.atomic import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def write_text(path: Path, text: str) -> None:
    from gwnmo_meta.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
