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

Modules: :mod:`~gwnmo_meta.suites.cells` (sources, rows, cells), :mod:`~gwnmo_meta.suites.tuning`
(the ladder and :func:`tune`), :mod:`~gwnmo_meta.suites.protocol_runner` (cells on disk) and
:mod:`~gwnmo_meta.suites.protocol_report` (statistics, reports); this module builds the suite and
runs it, and re-exports their public names.

Resumable: every cell writes ``val.json`` (selection) and ``test.json`` (scores) under
``OUT/cells/``; a finished file is never recomputed and an interrupted meta-training resumes from
its ``last.pt``. The decisions (grid extensions, selections) are recomputed from those files, so
re-running the same command continues where it stopped. A truncated or wrongly shaped cell file
is recomputed, with a warning (a finished meta-training is not redone: its checkpoint is read);
an unreadable ``suite.json`` is refused with a line saying how to recover.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gwnmo_meta.config import RunConfig
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import METHODS, SCHEDULES
from gwnmo_meta.suites.cells import (
    FINE_TUNERS,
    INIT_LEARNERS,
    NO_META_METHODS,
    Cell,
    Source,
    Variant,
)
from gwnmo_meta.suites.protocol_report import (
    cell_budget,
    paired_difference,
    plot_steps,
    summarise,
    write_protocol_reports,
)
from gwnmo_meta.suites.protocol_runner import TEST_SEED, CellRunner, read_record, write_json
from gwnmo_meta.suites.tuning import (
    MAX_EXTENSIONS,
    TuningResult,
    hyperparameters,
    ladder_index,
    ladder_value,
    tune,
)

__all__ = [
    "DEFAULT_SOURCES",
    "FINE_TUNERS",
    "INIT_LEARNERS",
    "LEGACY_SETTINGS",
    "MAX_EXTENSIONS",
    "NO_META_METHODS",
    "SUITE_SETTINGS",
    "TEST_SEED",
    "Cell",
    "CellRunner",
    "ProtocolSuite",
    "Source",
    "TuningResult",
    "Variant",
    "build_protocol",
    "cell_budget",
    "default_variants",
    "hyperparameters",
    "ladder_index",
    "ladder_value",
    "paired_difference",
    "parse_variants",
    "plot_steps",
    "protocol_base",
    "read_record",
    "run_group",
    "run_protocol",
    "summarise",
    "tune",
    "write_protocol_reports",
]

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
            return float(value) if "None" not in kinds or _parses_as_float(value) else value
    except ValueError:
        raise ConfigError(f"cannot read {value!r} as {kinds[0]}") from None
    return value


def _parses_as_float(value: str) -> bool:
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


def protocol_base(**given: Any) -> RunConfig:
    """The suite's shared settings: 100 meta-steps validated twice on 100 meta-val tasks, the
    rest RunConfig's defaults; ``given`` overrides any of them (validation every half run)."""
    cfg = RunConfig(**{"meta_steps": 100, "val_tasks": 100, **given})
    cfg.val_every = max(1, cfg.meta_steps // 2)
    return cfg


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
    base = base or protocol_base()
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
    from gwnmo_meta.training.run_folder import check_writable

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
        write_json(path, settings)


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
