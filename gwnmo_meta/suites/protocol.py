"""The ``protocol`` benchmark suite: every method on class-disjoint tasks, tuned alike, paired CIs.

Grid (all run on the same features and task streams of each source and seed):

* **sources** — ``DATASET`` or ``DATASET:TEST`` (``--dataset DATASET --test-dataset TEST``), e.g.
  ``mixed`` (class-disjoint parts over the three datasets) and ``mixed:cifar10``
  (leave-one-dataset-out);
* **shots**, and two **regimes**: ``learned`` (the head's init is meta-learned) and ``fixed`` (every
  task starts from the run seed's fixed random init; MAML and Meta-SGD, which only exist as init
  learners, are left out; SGD/Adam/HG are then plain fine-tuning with nothing meta-learned);
* **rows** (:class:`Variant`): a name, a method and ``RunConfig`` overrides. By default one GWNMO row
  per schedule (``schedules.SCHEDULES``), GWNMO' (default schedule), MAML, Meta-SGD, HG, SGD, Adam and the reference
  rows ``prototype`` and ``logreg`` (same numbers in both regimes); ``--variants`` adds rows (e.g. a
  learned step size) without code changes.

Tuning (equal budget): every hyperparameter a method has gets the same log-spaced grid — three
rungs of the half-decade ladder 1, 3, 10, 30, ... centred on the method's default — and is extended
by one rung at a time (up to ``MAX_EXTENSIONS``) while the best value sits at an edge. Several
hyperparameters (HG's α and β) are tuned one after the other, each at the other's chosen value.
The inner step size α is every method's hyperparameter, HG's β and logreg's L2 penalty are the
other two; the meta step size is **fixed** (``RunConfig.meta_lr``) for every meta-learned method,
so meta-learners get no extra tuning dimension. Selection uses meta-val accuracy on seed 0 only
(best validation of the run for meta-trained rows, ``val_tasks`` meta-val tasks otherwise); the
selected configuration is then re-run (meta-trained anew) on every seed of the source and scored on
``test_tasks`` meta-test tasks per seed (task stream ``1234 + seed``: the same tasks for every row).
The seeds vary meta-training (initialisations, M, task streams, the tasks scored), not the frozen
backbone: every cell of a source uses the first seed's conv4 (``RunConfig.data_seed``), which
costs one pre-training per source instead of one per seed.

Statistics: a row's accuracy pools the tasks of all its seeds (mean ± 95% t-CI over tasks); paired
differences (``stats.paired_diff_ci95``) compare two rows task by task on those pooled tasks; the
per-seed means are reported too, since the task CI does not cover seed-to-seed variation of the
meta-training runs. A difference is significant only when its CI excludes 0.

Resumable: every cell writes ``val.json`` (selection) and ``test.json`` (scores) under
``OUT/cells/``; a finished file is never recomputed and an interrupted meta-training resumes from
its ``last.pt``. The decisions (grid extensions, selections) are recomputed from those files, so
re-running the same command continues where it stopped. A truncated or wrongly shaped cell file
is recomputed, with a warning (a finished meta-training is not redone: its checkpoint is read);
an unreadable ``suite.json`` is refused with a line saying how to recover.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gwnmo_meta.config import RunConfig, base_default_lr
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.io.interrupts import Interrupted
from gwnmo_meta.registry import METHODS, SCHEDULES

# from the registry: reference rows (nothing meta-learned), init learners (MAML, Meta-SGD: only
# with a learned init) and fine-tuners (SGD, Adam, HG: nothing meta-learned with a fixed init)
NO_META_METHODS = METHODS.names(lambda m: m.engine == "reference")
INIT_LEARNERS = METHODS.names(lambda m: m.init_always_learned)
FINE_TUNERS = METHODS.names(
    lambda m: m.engine == "higher" and not m.learned_optimizer and not m.init_always_learned
)
MAX_EXTENSIONS = 3  # extra rungs per hyperparameter and direction when the best sits at an edge
TEST_SEED = 1234  # meta-test task stream of seed s: TEST_SEED + s (seed 0: evaluate's default)
DEFAULT_SOURCES = ("mixed", "mixed:mnist", "mixed:fmnist", "mixed:cifar10")
SUITE_SETTINGS = (
    "meta_steps",
    "val_every",
    "val_tasks",
    "meta_batch",
    "inner_steps",
    "meta_lr",
    "head_hidden",
    "weighting",
    "weighting_hidden",
    "backbone",
    "query",
    "ways",
    "first_order",
    "task_batch",
    "adapt",
    "conv_bias",
)
# what a setting added after a suite was written meant before it existed (else its default)
LEGACY_SETTINGS = {"conv_bias": True}


def ladder_value(k: int) -> float:
    """Rung ``k`` of the half-decade ladder: …, 0.3, 1, 3, 10, … (k = 0 → 1, k = 1 → 3)."""
    return float(f"{(3 if k % 2 else 1) * 10 ** (k // 2):.6g}")


def ladder_index(value: float) -> int:
    """The rung nearest to ``value`` (in log scale)."""
    k = round(2 * math.log10(value))
    return min((k - 1, k, k + 1), key=lambda j: abs(math.log(ladder_value(j) / value)))


def hyperparameters(
    method: str, adapt: str = "head", overrides: dict[str, Any] | None = None
) -> list[tuple[str, float]]:
    """(RunConfig field, centre of its grid) for each hyperparameter ``method`` is tuned on
    (the inner step size centred on the ``--adapt all`` default when the whole conv4 adapts, and
    on the base optimizer's for a row over a base direction, e.g. ``overrides={"base": "adam"}``)."""
    info, default = METHODS[method], RunConfig()
    lr = info.inner_lr_all if adapt == "all" else info.inner_lr
    over = overrides or {}
    centre = base_default_lr(
        over.get("base", default.base),
        over.get("base_momentum", default.base_momentum),
        lambda i: i.inner_lr_all if adapt == "all" else i.inner_lr,
    )
    axes = [("inner_lr", lr.value if centre is None else centre)] if lr else []
    return axes + [(field, getattr(default, field)) for _, field in info.optimizer_options]


@dataclass(frozen=True)
class Source:
    """Where the tasks come from: ``dataset`` (and the held-out ``test_dataset``)."""

    dataset: str
    test_dataset: str | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        ds, _, test = text.partition(":")
        if not ds or (":" in text and not test):
            raise ConfigError(f"cannot parse source {text!r}; use DATASET or DATASET:TEST_DATASET")
        return cls(ds, test or None)

    @property
    def key(self) -> str:
        return (
            self.dataset if self.test_dataset is None else f"{self.dataset}-to-{self.test_dataset}"
        )

    @property
    def label(self) -> str:
        if self.test_dataset is None:
            return self.dataset
        return f"{self.dataset} → {self.test_dataset} (held out)"

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.dataset}
        if self.test_dataset is not None:
            out["test_dataset"] = self.test_dataset
        return out


@dataclass(frozen=True)
class Variant:
    """A table row: ``method`` with ``RunConfig`` ``overrides`` (e.g. a schedule), named ``name``."""

    name: str
    method: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        slug = "".join(c if c.isalnum() or c in "-." else "_" for c in self.name)
        if not self.overrides:
            return slug
        return f"{slug}-{hashlib.sha1(repr(self.overrides).encode()).hexdigest()[:6]}"

    def regimes(self, regimes: Sequence[str]) -> list[str]:
        """The regimes this row runs in (``any`` for the regime-free reference rows)."""
        if self.method in NO_META_METHODS:
            return ["any"]
        return [r for r in regimes if not (r == "fixed" and self.method in INIT_LEARNERS)]


def default_variants(methods: Sequence[str], schedules: Sequence[str]) -> list[Variant]:
    """One row per method; GWNMO gets one row per schedule in ``schedules``, GWNMO' one row with
    the default schedule (add others with ``--variants``)."""
    rows = []
    for m in methods:
        info = METHODS[m]
        if info.learned_optimizer and not info.prime:
            rows += [Variant(f"{m} {s}", m, (("schedule", s),)) for s in schedules]
        elif info.learned_optimizer:
            rows.append(Variant(m, m, (("schedule", RunConfig(method=m).schedule_name),)))
        else:
            rows.append(Variant(m, m))
    return rows


def parse_variants(text: str) -> list[Variant]:
    """``NAME=METHOD[:FIELD=VALUE,...]`` rows separated by ``;`` (values typed like RunConfig's)."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    out = []
    for spec in filter(None, (s.strip() for s in text.split(";"))):
        name, eq, rest = spec.partition("=")
        method, _, opts = rest.partition(":")
        if not eq or not name.strip() or method.strip() not in METHODS:
            raise ConfigError(
                f"cannot parse variant {spec!r}; use NAME=METHOD[:FIELD=VALUE,...] with METHOD one "
                f"of {', '.join(METHODS)}"
            )
        overrides = []
        for item in filter(None, (o.strip() for o in opts.split(","))):
            key, eq2, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if (
                not eq2
                or key not in fields
                or key in ("method", "dataset", "seed", "data_seed", "learn_init")
            ):
                raise ConfigError(
                    f"variant {name!r}: {item!r} is not FIELD=VALUE of a RunConfig field"
                )
            overrides.append((key, _typed(value.strip(), str(fields[key].type))))
        out.append(Variant(name.strip(), method.strip(), tuple(overrides)))
    return out


def _typed(value: str, annotation: str) -> Any:
    """``value`` read as the RunConfig field annotated ``annotation`` (e.g. ``"int | None"``)."""
    if value.lower() in ("none", "null"):
        return None
    kinds = [k.strip() for k in annotation.split("|")]
    try:
        if "bool" in kinds:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if "int" in kinds:
            return int(value)
        if "float" in kinds:  # an optional float also takes a non-number, as before
            return float(value) if "None" not in kinds or _is_number(value) else value
    except ValueError:
        raise ConfigError(f"cannot read {value!r} as {kinds[0]}") from None
    return value


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


@dataclass
class ProtocolSuite:
    """The protocol grid and its shared settings (``base``: meta-steps, tasks, head, ...)."""

    base: RunConfig
    sources: list[Source]
    shots: list[int]
    regimes: list[str]
    variants: list[Variant]
    seeds: list[int]
    seed_sources: list[Source]  # sources whose selected rows run on every seed (others: seed 0)
    test_tasks: int
    grid_points: int = 3

    def seeds_for(self, source: Source) -> list[int]:
        return self.seeds if source in self.seed_sources else self.seeds[:1]

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self.base, k) for k in SUITE_SETTINGS} | {
            "test_tasks": self.test_tasks,
            "grid_points": self.grid_points,
        }


def build_protocol(
    *,
    base: RunConfig | None = None,
    sources: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    regimes: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    schedules: Sequence[str] | None = None,
    extra_variants: Sequence[Variant] = (),
    seeds: Sequence[int] | None = None,
    seed_sources: Sequence[str] | None = None,
    test_tasks: int | None = None,
    grid_points: int | None = None,
) -> ProtocolSuite:
    """The protocol suite with its defaults (every argument overrides one); validates choices."""
    base = base or RunConfig(meta_steps=100, val_every=50, val_tasks=100)
    grid_points = 3 if grid_points is None else grid_points
    if not 1 <= grid_points <= 5:
        raise ConfigError(
            f"--lr-values must be 1-5 grid points for the protocol, got {grid_points}"
        )
    srcs = [Source.parse(s) for s in (sources or DEFAULT_SOURCES)]
    regimes = list(regimes or ("learned", "fixed"))
    bad = [r for r in regimes if r not in ("learned", "fixed")]
    if bad or not regimes:
        raise ConfigError(f"unknown regime(s) {bad}; choose learned and/or fixed")
    if methods is None:  # reference rows classify backbone features: head mode only
        methods = [m for m in METHODS if base.adapt == "head" or m not in NO_META_METHODS]
    methods = list(methods)
    for m in methods:
        METHODS.check(m, "--methods")
        if base.adapt == "all" and m in NO_META_METHODS:
            raise ConfigError(
                f"--methods {m}: reference rows need --adapt head (backbone features)"
            )
    schedules = list(schedules or SCHEDULES)
    for s in schedules:
        SCHEDULES.check(s, "--schedules")
    variants = default_variants(methods, schedules) + list(extra_variants)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"row names must be unique, got {names}")
    seeds = list(seeds if seeds is not None else (0, 1, 2))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct and not empty, got {seeds}")
    seed_srcs = srcs if seed_sources is None else [Source.parse(s) for s in seed_sources]
    test_tasks = 600 if test_tasks is None else test_tasks
    if test_tasks <= 0:
        raise ConfigError(f"--test-tasks must be positive, got {test_tasks}")
    return ProtocolSuite(
        base=replace(base, seed=seeds[0]).validate(),
        sources=srcs,
        shots=list(shots or (1, 5)),
        regimes=regimes,
        variants=variants,
        seeds=seeds,
        seed_sources=seed_srcs,
        test_tasks=test_tasks,
        grid_points=grid_points,
    )


# ---- cells -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One configuration on one seed: a meta-training run (or none) and its scores."""

    source: Source
    shots: int
    variant: Variant
    regime: str  # learned / fixed / any
    hparams: tuple[tuple[str, float], ...]
    seed: int

    @property
    def key(self) -> str:
        hp = "-".join(f"{_SHORT.get(k, k)}{v:g}" for k, v in self.hparams) or "nohp"
        return (
            f"{self.source.key}-{self.shots}shot-{self.variant.key}-{self.regime}-{hp}-s{self.seed}"
        )

    @property
    def meta_trained(self) -> bool:
        """Whether the cell learns something: a fine-tuner with a fixed init learns only its step
        sizes, and only under ``learn_lr``."""
        m = self.variant.method
        learns_lr = dict(self.variant.overrides).get("learn_lr", "off") != "off"
        fixed_fine_tuner = m in FINE_TUNERS and self.regime == "fixed"
        return m not in NO_META_METHODS and not (fixed_fine_tuner and not learns_lr)

    def config(self, base: RunConfig) -> RunConfig:
        try:
            cfg = replace(
                base,
                **self.source.overrides(),
                shots=self.shots,
                method=self.variant.method,
                learn_init=self.regime != "fixed",
                seed=self.seed,
                data_seed=base.seed,  # one frozen backbone per source: seeds vary meta-training
                **dict(self.variant.overrides),
                **dict(self.hparams),
            )
        except TypeError as exc:  # e.g. test_dataset on a build without it
            raise ConfigError(f"cell {self.key}: {exc}") from None
        return cfg.validate()


_SHORT = {"inner_lr": "lr", "hg_beta": "beta", "logreg_l2": "l2"}


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
        rec = read_record(path, _is_val_record)
        if rec is not None:
            return rec
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
                    raise Interrupted(res.signal)
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
        _write_json(path, rec)
        self.cells_run += 1
        return rec

    def test(self, cell: Cell) -> dict[str, Any]:
        """Meta-test scores of ``cell`` on the task stream ``TEST_SEED + seed``."""
        from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint, evaluate_method

        path = self.folder(cell) / "test.json"
        rec = read_record(path, _is_test_record)
        if rec is not None:
            return rec
        val = self.validate(cell)
        cfg = cell.config(self.suite.base)
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
        _write_json(path, rec)
        return rec


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


def _is_val_record(rec: Any) -> bool:
    """The shape :meth:`CellRunner.validate` writes."""
    return (
        isinstance(rec, dict)
        and isinstance(rec.get("cell"), str)
        and isinstance(rec.get("meta_trained"), bool)
        and (rec.get("val_accuracy") is None or _number(rec["val_accuracy"]))
        and isinstance(rec.get("history"), list)
    )


def _is_test_record(rec: Any) -> bool:
    """The shape :meth:`CellRunner.test` writes (``eval`` ``None``: a diverged cell)."""
    if not (isinstance(rec, dict) and isinstance(rec.get("cell"), str) and "eval" in rec):
        return False
    ev = rec["eval"]
    return ev is None or (
        isinstance(ev, dict)
        and _number(ev.get("accuracy_mean"))
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


def _write_json(path: Path, obj: Any) -> None:
    from gwnmo_meta.io.atomic import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def _write_text(path: Path, text: str) -> None:
    from gwnmo_meta.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


# ---- tuning ----------------------------------------------------------------------------------


@dataclass
class Tuned:
    """The selected hyperparameters of one row (on seed 0's meta-val) and what was tried."""

    hparams: tuple[tuple[str, float], ...]
    tried: list[dict[str, Any]] = field(default_factory=list)
    at_edge: list[str] = field(default_factory=list)  # hyperparameters still best at a grid edge


def tune(
    axes: Sequence[tuple[str, float]],
    score: Callable[[tuple[tuple[str, float], ...]], float | None],
    grid_points: int = 3,
) -> Tuned:
    """Coordinate-wise grid search on the half-decade ladder, extending grids at the edges.

    Args:
        axes: (name, centre) per hyperparameter, tuned in this order.
        score: meta-val accuracy of a configuration (``None``: diverged, never selected).
        grid_points: rungs per hyperparameter before extensions (odd: centred on the default).

    Returns:
        :class:`Tuned` with the selection and every configuration tried (in order).
    """
    hp = {k: v for k, v in axes}
    tried: list[dict[str, Any]] = []
    at_edge: list[str] = []
    for name, _ in axes:
        k0 = ladder_index(hp[name])
        half = grid_points // 2
        ks = list(range(k0 - half, k0 - half + grid_points))
        scores: dict[int, float] = {}

        def run(k: int, name: str = name, scores: dict[int, float] = scores) -> None:
            config = tuple((n, ladder_value(k) if n == name else v) for n, v in hp.items())
            s = score(config)
            scores[k] = -1.0 if s is None else s
            tried.append({"hparams": dict(config), "val_accuracy": s})

        for k in ks:
            run(k)
        extensions = {-1: 0, 1: 0}
        while True:
            best = max(ks, key=lambda k: (scores[k], -abs(k - k0)))
            side = -1 if best == ks[0] else (1 if best == ks[-1] else 0)
            if side == 0 or extensions[side] >= MAX_EXTENSIONS or len(ks) == 1:
                break
            extensions[side] += 1
            new = best + side
            ks = [new, *ks] if side < 0 else [*ks, new]
            run(new)
        if best in (ks[0], ks[-1]) and len(ks) > 1:
            at_edge.append(name)
        hp[name] = ladder_value(best)
    return Tuned(tuple(hp.items()), tried, at_edge)


# ---- the whole suite ---------------------------------------------------------------------------


def run_protocol(
    suite: ProtocolSuite,
    out: Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Run (or resume) the suite; writes reports after each (source, shots) group.

    Returns:
        (the results dict written to ``results.json``, the report files).
    """
    from gwnmo_meta.training.trainer import check_writable

    check_writable(out)
    _check_settings(suite, out)
    runner = CellRunner(suite, out)
    groups: list[dict[str, Any]] = []
    paths: list[Path] = []
    t_start = time.perf_counter()
    for source in suite.sources:
        for shots in suite.shots:
            groups.append(run_group(suite, runner, source, shots, log=log))
            results = summarise(suite, groups, out, time.perf_counter() - t_start)
            paths = write_protocol_reports(results, out)
            if log:
                log(f"{source.key} {shots}-shot done; reports in {out}")
    return results, paths


def _check_settings(suite: ProtocolSuite, out: Path) -> None:
    path = out / "suite.json"
    settings = json.loads(json.dumps(suite.settings()))
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            stored = None
        if not isinstance(stored, dict):
            raise ConfigError(
                f"{path} is unreadable or not a protocol suite's settings (cut off?); if {out} was "
                "run with these same flags, delete suite.json and rerun (the finished cells are "
                "kept), else choose another --out"
            )
        # a setting added after the suite was written (e.g. ``adapt``) compares as its default
        defaults = {k: getattr(RunConfig(), k) for k in SUITE_SETTINGS} | LEGACY_SETTINGS
        saved = defaults | stored
        diff = sorted(k for k in settings if saved.get(k) != settings[k])
        if diff:
            raise ConfigError(
                f"{out} holds a protocol suite run with other settings ({', '.join(diff)}); "
                "use the same flags to resume it, or another --out"
            )
    else:
        _write_json(path, settings)


def run_group(
    suite: ProtocolSuite,
    runner: CellRunner,
    source: Source,
    shots: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tune every row of one (source, shots) on seed 0, then score the selections on every seed."""
    rows = []
    seeds = suite.seeds_for(source)
    for variant in suite.variants:
        for regime in variant.regimes(suite.regimes):
            axes = hyperparameters(variant.method, suite.base.adapt, dict(variant.overrides))
            given = {k for k, _ in variant.overrides}
            axes = [(k, v) for k, v in axes if k not in given]  # a row may pin a value

            def score(hp, variant=variant, regime=regime):
                cell = Cell(source, shots, variant, regime, hp, seeds[0])
                return runner.validate(cell)["val_accuracy"]

            tuned = tune(axes, score, suite.grid_points)
            tests = []
            for seed in seeds:
                cell = Cell(source, shots, variant, regime, tuned.hparams, seed)
                rec = runner.test(cell)
                val = runner.validate(cell)
                tests.append(
                    {
                        "seed": seed,
                        "meta_trained": val["meta_trained"],
                        "val_accuracy": val["val_accuracy"],
                        "diverged": val.get("diverged"),
                        "eval": rec["eval"],
                    }
                )
            rows.append(
                {
                    "variant": variant.name,
                    "method": variant.method,
                    "overrides": dict(variant.overrides),
                    "regime": regime,
                    "hparams": dict(tuned.hparams),
                    "tried": tuned.tried,
                    "at_edge": tuned.at_edge,
                    "seeds": tests,
                }
            )
            if log:
                log(f"{source.key} {shots}-shot {variant.name} [{regime}]: {dict(tuned.hparams)}")
    return {
        "source": source.key,
        "label": source.label,
        "shots": shots,
        "seeds": seeds,
        "rows": rows,
    }


# ---- statistics and reports ----------------------------------------------------------------------


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
        rec = read_record(val, _is_val_record, warn=False)
        if rec is None:  # a damaged file of a cell outside this suite: not counted
            continue
        budget["scored_cells"] += 1
        budget["meta_trained_cells"] += bool(rec.get("meta_trained"))
        budget["meta_steps"] += _count(rec, "meta_steps")
        budget["cell_seconds"] += _count(rec, "seconds")
        budget["meta_val_cpu_seconds"] += _count(rec, "cpu_seconds")
        test = read_record(val.with_name("test.json"), _is_test_record, warn=False)
        if test is not None:
            budget["cell_seconds"] += _count(test, "seconds")
    budget["cell_seconds"] = round(budget["cell_seconds"], 1)
    budget["meta_val_cpu_seconds"] = round(budget["meta_val_cpu_seconds"], 1)
    return budget


def _count(rec: dict[str, Any], key: str) -> float:
    return rec[key] if _number(rec.get(key)) else 0


def _diff(a: list[float], b: list[float], n_seeds: int) -> dict[str, Any]:
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
    from gwnmo_meta.evaluation.stats import mean_ci95

    out_groups = []
    for g in groups:
        table, pooled = [], {}
        digests = set()
        for row in g["rows"]:
            rid = _row_id(row)
            accs = _pooled(row)
            for t in row["seeds"]:
                if t.get("eval"):
                    digests.add((t["seed"], t["eval"]["tasks_digest"]))
            entry = {
                "row": rid,
                "variant": row["variant"],
                "method": row["method"],
                "regime": row["regime"],
                "hparams": row["hparams"],
                "at_edge": row["at_edge"],
                "grid": [(t["hparams"], t["val_accuracy"]) for t in row["tried"]],
                "val_accuracy": row["seeds"][0]["val_accuracy"],
                "seed_accuracy": {
                    t["seed"]: (t["eval"]["accuracy_mean"] if t.get("eval") else None)
                    for t in row["seeds"]
                },
            }
            if accs is not None:
                acc = mean_ci95(accs)
                loss = mean_ci95(_pooled(row, "task_losses"))
                entry.update(
                    accuracy_mean=acc.mean,
                    accuracy_ci95=acc.ci95,
                    loss_mean=loss.mean,
                    tasks=acc.n,
                    step_accuracy=_mean_curves(row, "step_accuracy_mean"),
                    step_loss=_mean_curves(row, "step_loss_mean"),
                )
                pooled[rid] = accs
            table.append(entry)
        if len({d for _, d in digests}) > len({s for s, _ in digests}):
            raise ConfigError(
                f"{g['source']} {g['shots']}-shot: rows were scored on different tasks"
            )
        n_seeds = len(g["seeds"])
        refs = {n: f"{n} [{m.paired_baseline}]" for n, m in METHODS.items() if m.paired_baseline}
        for entry in table:
            for name, ref in refs.items():
                if entry["row"] in pooled and ref in pooled:
                    entry[f"vs_{name}"] = _diff(pooled[entry["row"]], pooled[ref], n_seeds)
        pairs = []
        ids = list(pooled)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                pairs.append({"a": a, "b": b, **_diff(pooled[a], pooled[b], n_seeds)})
        best = max(pooled, key=lambda r: math.fsum(pooled[r]) / len(pooled[r]), default=None)
        best_vs_proto = None
        proto = next((n for n, m in METHODS.items() if m.no_training_reference), None)
        if best is not None and proto in pooled and best != proto:
            best_vs_proto = {"best": best, **_diff(pooled[best], pooled[proto], n_seeds)}
        out_groups.append(
            {
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
        )
    budget = cell_budget(out)
    budget["wall_seconds_this_invocation"] = round(wall_s, 1)
    return {
        "settings": suite.settings(),
        "base": suite.base.to_dict(),
        "budget": budget,
        "groups": out_groups,
    }


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
    _write_json(json_path, results)
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
            hp = ", ".join(f"{_SHORT.get(k, k)} {v:g}" for k, v in r["hparams"].items()) or "–"
            if r["at_edge"]:
                hp += " (edge: " + ", ".join(_SHORT.get(k, k) for k in r["at_edge"]) + ")"
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
    _write_text(md_path, "\n".join(lines) + "\n")
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
