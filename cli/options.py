"""The options several commands share, as ``Annotated`` types, and the choices behind them.

Choices (``--method``, ``--dataset`` ...) come from :mod:`gwnmo_meta.registry`. Help texts stay
one short line: the provenance of the tuned defaults is in docs/CLI.md. A command's own options
are declared at the top of its module.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer

from gwnmo_meta import registry
from gwnmo_meta.cli.common import check_device, out_folder


# ---- choices, from the registry -------------------------------------------------------------
def choices(name: str, entries: Mapping[str, object]) -> type[Enum]:
    """A str Enum of the registered names, which Typer shows and checks as the option's choices."""
    return Enum(name, {n: n for n in entries}, type=str)  # type: ignore[return-value]


if TYPE_CHECKING:  # one str Enum to a type checker; the members are the registry's, at run time

    class Choice(str, Enum):
        """A registered name."""

    Dataset = Choice
    SourceDataset = Choice
    Method = Choice
    TrainedMethod = Choice
    ClassicOptimizer = Choice
    Schedule = Choice
    ClassicSchedule = Choice
    LearnLr = Choice
    Weighting = Choice
    BaseDirection = Choice
    Backbone = Choice
    Adapt = Choice
else:
    Dataset = choices("Dataset", registry.DATASETS)
    SourceDataset = choices(  # read from disk (not a pool)
        "SourceDataset", {d: None for d in registry.DATASETS.names(lambda i: not i.sources)}
    )
    Method = choices("Method", registry.METHODS)
    # meta-train offers only what it trains (evaluate --method scores the reference classifiers)
    TrainedMethod = choices(
        "TrainedMethod",
        {m: None for m in registry.METHODS.names(lambda i: i.engine != "reference")},
    )
    ClassicOptimizer = choices(
        "ClassicOptimizer", {m: None for m in registry.METHODS.names(lambda i: i.classic)}
    )
    Schedule = choices("Schedule", registry.SCHEDULES)
    ClassicSchedule = choices(
        "ClassicSchedule", {s: None for s in registry.SCHEDULES.names(lambda i: i.classic)}
    )
    LearnLr = choices("LearnLr", registry.LEARN_LR)
    Weighting = choices("Weighting", registry.WEIGHTINGS)
    BaseDirection = choices("BaseDirection", registry.BASES)
    Backbone = choices("Backbone", registry.BACKBONES)
    Adapt = choices("Adapt", registry.ADAPT)


# ---- help panels --------------------------------------------------------------------------------
DATA, TASK, METHOD, INNER, META, OUTPUT = (
    "Data",
    "Task",
    "Method",
    "Inner loop",
    "Meta-training",
    "Output",
)


def opt(*names: str, help: str, panel: str | None = None, **extra: Any) -> Any:
    """``typer.Option(*names, help=help)`` listed under the help panel ``panel``."""
    return typer.Option(*names, help=help, rich_help_panel=panel, **extra)


def panel(option: Any, name: str) -> Any:
    """The ``typer.Option`` of ``option`` (an ``Annotated`` alias) listed under the panel ``name``:
    ``Annotated[str, panel(Device, META)]``."""
    info = copy.copy(get_args(option)[1])
    info.rich_help_panel = name
    return info


def out(help: str) -> Any:
    """An ``--out`` folder option in the Output panel (an empty name is a usage error)."""
    return opt("--out", help=help, panel=OUTPUT, parser=out_folder, metavar="<path>")


def listing(choices: type[Enum]) -> str:
    """The names of ``choices`` for a help text: ``"a, b or c"``."""
    names = [c.value for c in choices]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


# ---- data and tasks -----------------------------------------------------------------------------
DataRoot = Annotated[
    Path | None,
    opt("--data-root", help="Data folder (default: $GWNMO_DATA or cache).", panel=DATA),
]
Download = Annotated[
    bool, opt("--download/--no-download", help="Download missing data.", panel=DATA)
]
SkipCheck = Annotated[
    bool,
    opt("--skip-integrity-check", help="Accept CIFAR-10 whose md5 sums differ.", panel=DATA),
]
TaskDatasetOpt = Annotated[
    Dataset, opt("--dataset", help=f"{listing(Dataset)}.", panel=TASK, metavar="NAME")
]
TestDataset = Annotated[
    SourceDataset | None,
    opt(
        "--test-dataset",
        help=f"mixed: hold out {listing(SourceDataset)}.",
        panel=TASK,
        metavar="NAME",
    ),
]
TrainClasses = Annotated[
    str | None,
    opt("--train-classes", help="Meta-train classes, e.g. 0-4 or cifar10:0-4.", panel=TASK),
]
ValClasses = Annotated[
    str | None, opt("--val-classes", help="Class-disjoint meta-val classes.", panel=TASK)
]
TestClasses = Annotated[
    str | None, opt("--test-classes", help="Meta-test classes, e.g. 5-9.", panel=TASK)
]
KeepImageSplit = Annotated[
    bool,
    opt("--keep-image-split", help="Keep torchvision's train/test image split.", panel=TASK),
]
BackboneOpt = Annotated[
    Backbone,
    opt("--backbone", help=f"Frozen E: {listing(Backbone)}.", panel=TASK, metavar="NAME"),
]
Ways = Annotated[int, opt("--ways", help="N: classes per task.", panel=TASK)]
Shots = Annotated[int, opt("--shots", help="K: support examples per class.", panel=TASK)]
Query = Annotated[int, opt("--query", help="Q: query examples per class.", panel=TASK)]

# ---- method and inner loop ----------------------------------------------------------------------
WeightingOpt = Annotated[
    Weighting,
    opt("--weighting", help=f"M: {listing(Weighting)}.", panel=METHOD, metavar="NAME"),
]
WeightingHidden = Annotated[int, opt("--weighting-hidden", help="Hidden width of M.", panel=METHOD)]
BaseOpt = Annotated[
    BaseDirection,
    opt("--base", help=f"M weights {listing(BaseDirection)}.", panel=METHOD, metavar="NAME"),
]
BaseMomentum = Annotated[
    float, opt("--base-momentum", help="--base momentum's μ, adam's β1.", panel=METHOD)
]
BaseBeta2 = Annotated[float, opt("--base-beta2", help="--base adam's β2.", panel=METHOD)]
HeadHidden = Annotated[
    int | None,
    opt("--head-hidden", help="Two-layer head this wide (default: one layer).", panel=METHOD),
]
AdaptOpt = Annotated[Adapt, opt("--adapt", help="head or all (conv4 + head).", panel=INNER)]
ConvBias = Annotated[
    bool, opt("--conv-bias/--no-conv-bias", help="conv4 with biases.", panel=INNER)
]
TaskBatch = Annotated[
    bool, opt("--task-batch/--no-task-batch", help="Tasks adapt together.", panel=INNER)
]

# ---- run ----------------------------------------------------------------------------------------
Device = Annotated[
    str,
    opt(
        "--device", help="auto, cpu, cuda, cuda:N or mps.", metavar="DEVICE", callback=check_device
    ),
]
Seed = Annotated[int, opt("--seed", help="Seed of tasks, inits and meta-training.")]
Quiet = Annotated[bool, opt("--quiet", "-q", help="No progress bars.", panel=OUTPUT)]
Resume = Annotated[bool, opt("--resume", help="Continue the run in --out.", panel=OUTPUT)]
AllowDataChange = Annotated[
    bool, opt("--allow-data-change", help="With --resume: accept changed data.", panel=OUTPUT)
]
