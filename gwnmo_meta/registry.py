"""One registry per choice: methods, schedules, weightings, datasets, backbones and devices.

Every list of choices in gwnmo-meta is derived from here: the CLI's ``--method``/``--dataset``/...
choices, the benchmark's method lists and suites, the validation in ``config.py``, ``classic.py``
and ``tasks/``, and the methods ``methods.py`` builds. Adding a method is one
:func:`Registry.register` call below; the CLI, the benchmark and validation pick it up.

Importing this module stays light (no torch, no learn2learn): ``gwnmo-meta --help`` reads it.
Each method's implementation is a zero-argument factory returning the class (``MethodInfo.impl``),
which imports it only when called.

A :class:`Registry` is a read-only mapping from name to facts, in registration order::

    >>> from gwnmo_meta.registry import METHODS
    >>> METHODS["maml"].engine
    'learn2learn'
    >>> [m for m, info in METHODS.items() if info.learned_optimizer]
    ['gwnmo', 'gwnmo-prime']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from gwnmo_meta.errors import ConfigError


@dataclass(frozen=True)
class Choice:
    """A named choice with a one-line summary (the base of every registry entry)."""

    name: str
    summary: str = ""


T = TypeVar("T", bound=Choice)


class Registry(Mapping[str, T], Generic[T]):
    """Named choices of one kind, in registration order; iterating yields the names.

    Args:
        kind: what the entries are, for error messages ("method", "dataset", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Add ``entry`` under ``entry.name``.

        Args:
            entry: the choice's facts.

        Returns:
            ``entry``, unchanged.

        Raises:
            ValueError: a choice of that name is already registered.
        """
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, where: Callable[[T], bool] | None = None) -> tuple[str, ...]:
        """Registered names, in order.

        Args:
            where: keep only the entries for which this returns true.

        Returns:
            The names.
        """
        return tuple(n for n, e in self._entries.items() if where is None or where(e))

    def check(self, name: str, flag: str | None = None) -> T:
        """The entry called ``name``, or a one-line :class:`ConfigError` listing the choices.

        Args:
            name: the user's value.
            flag: the option it came from (e.g. ``--methods``), named in the message.

        Returns:
            The registered entry.
        """
        if name not in self._entries:
            where = f" in {flag}" if flag else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{where}; choose one of {', '.join(self._entries)}"
            )
        return self._entries[name]


@dataclass(frozen=True)
class Tuned:
    """A default value and its provenance (which benchmark chose it, and where the evidence is)."""

    value: float
    source: str

    def describe(self, symbol: str) -> str:
        """``"α = 1 (best of …)"``: the value and its provenance, for ``--help`` and docs.

        Args:
            symbol: The quantity's name, e.g. ``"α"``.

        Returns:
            One line.
        """
        return f"{symbol} = {self.value:g} ({self.source})"


# ---- methods --------------------------------------------------------------------------------
# Where each method's tuned step sizes come from (tests/test_defaults.py checks the values
# against these committed benchmark outputs).
_CLASSIC_SCAN = (
    "best mean validation accuracy of the classic lr scan on all three datasets, "
    "benchmarks/classic/results.json"
)
_MAIN_SEL = (
    "the step size meta-val selected most often in the main table, benchmarks/main/results.json"
)
_SCAN = f"best mean meta-val accuracy of the fine-tuning lr scan, benchmarks/lr_scan/*.json; {_MAIN_SEL}"
# Inner step-size grids of the benchmark suites: the same number of values for every method
# (equal tuning budget), ordered (a suite with --lr-values N takes the first N); values suit the
# unit-norm features: benchmarks/lr_scan.py shows plain SGD diverging from lr 10 and Adam from 0.3.
_GRID = (3.0, 1.0, 0.3)
# --adapt all (conv4 + head from images, gradients of a different scale): the end-to-end study's
# selections where it ran the method, untuned values elsewhere.
_ALL = "untuned, in the range MAML's conv4 uses (0.01-0.4); the benchmark tunes it per method"
_STUDY = (
    "selected on seed-0 meta-val of the end-to-end study (conv4, mixed 1-shot, 100 meta-steps), "
    "benchmarks/study/{}-1shot"
)


# ---- implementations: each imported only when its method is built --------------------------


def _gwnmo() -> type[Any]:
    from gwnmo_meta.optim.gwnmo import GWNMO

    return GWNMO


def _hg() -> type[Any]:
    from gwnmo_meta.optim.gwnmo import HG

    return HG


def _sgd() -> type[Any]:
    from torch.optim import SGD

    return SGD


def _adam() -> type[Any]:
    from torch.optim import Adam

    return Adam


def _maml() -> type[Any]:
    from gwnmo_meta.training.l2l import learn2learn

    return learn2learn().algorithms.MAML


def _meta_sgd() -> type[Any]:
    from gwnmo_meta.training.l2l import learn2learn

    return learn2learn().algorithms.MetaSGD


def _prototype() -> type[Any]:
    from gwnmo_meta.training.reference import PrototypeMethod

    return PrototypeMethod


def _logreg() -> type[Any]:
    from gwnmo_meta.training.reference import LogRegMethod

    return LogRegMethod


@dataclass(frozen=True)
class MethodInfo(Choice):
    """Facts about a few-shot method (``meta-train --method``) or classic optimizer.

    Attributes:
        engine: what adapts the target head: ``"higher"`` (a torch optimizer made
            differentiable by higher), ``"learn2learn"`` (an ``l2l.algorithms`` wrapper,
            one task at a time) or ``"reference"`` (a reference classifier fitted on the
            support set, no inner loop, nothing meta-learned; ``impl`` is its MetaMethod).
        impl: a zero-argument factory returning the implementing class: the torch optimizer
            (higher), the learn2learn algorithm or the reference MetaMethod (``None``: none yet).
        meta_learns: what meta-training learns (for docs and ``--help``).
        learned_optimizer: has a weighting network M (its default ``--schedule`` is alg2; every
            other method's is ``unrolled``, MAML's objective).
        learnable_lr: takes ``--learn-lr`` (its inner step size α can be meta-learned).
        prime: GWNMO' (raw weights, no normalisation; M starts at output 1).
        init_always_learned: meta-learns the head's initialisation whatever ``--learn-init``
            says (so ``--no-learn-init`` is refused).
        optimizer_options: keyword of the optimizer (or of the reference fit) → config field
            that supplies it; the benchmark protocol tunes these fields too.
        classic: available as ``gwnmo-meta train --optimizer``.
        suite_learn_init: benchmark suites meta-learn its init (``False``: plain fine-tuning
            from a fixed random init).
        suites: benchmark suites whose default method list includes it.
        inner_lr: the few-shot inner step size α when ``--inner-lr`` is unset, with its
            provenance (``None``: no inner loop).
        inner_lr_all: the same with ``--adapt all`` (conv4 adapted end to end).
        lr_grid: the benchmark's inner step-size grid (empty: no step size to tune).
        classic_lr: the step size of ``gwnmo-meta train`` when ``--lr`` is unset (classic only).
        paired_baseline: the init regime (``"fixed"``/``"learned"``) in which the protocol
            report compares every row with this method (``""``: not a baseline).
        no_training_reference: the reference row the best method must beat significantly.
    """

    engine: Literal["higher", "learn2learn", "reference"] = "higher"
    impl: Callable[[], type[Any]] | None = None
    meta_learns: str = ""
    learned_optimizer: bool = False
    learnable_lr: bool = False
    prime: bool = False
    init_always_learned: bool = False
    optimizer_options: tuple[tuple[str, str], ...] = ()
    classic: bool = False
    suite_learn_init: bool = True
    suites: tuple[str, ...] = ()
    inner_lr: Tuned | None = None
    inner_lr_all: Tuned | None = None
    lr_grid: tuple[float, ...] = ()
    classic_lr: Tuned | None = None
    paired_baseline: str = ""
    no_training_reference: bool = False

    def implementation(self) -> type[Any]:
        """The implementing class (:attr:`impl`'s result, imported now)."""
        if self.impl is None:
            raise ValueError(f"method {self.name!r} has no implementation registered")
        return self.impl()


METHODS: Registry[MethodInfo] = Registry("method")
METHODS.register(
    MethodInfo(
        "gwnmo",
        "GWNMO: gradient weighted by M (sigmoid weights, normalised), via higher",
        impl=_gwnmo,
        meta_learns="M (+ init)",
        learnable_lr=True,
        learned_optimizer=True,
        classic=True,
        suites=("quick", "main", "transfer"),
        inner_lr=Tuned(3.0, _MAIN_SEL),
        inner_lr_all=Tuned(0.1, _STUDY.format("learned")),
        lr_grid=_GRID,
        classic_lr=Tuned(1.0, _CLASSIC_SCAN),
    )
)
METHODS.register(
    MethodInfo(
        "gwnmo-prime",
        "GWNMO': raw weights, no normalisation, via higher",
        impl=_gwnmo,
        meta_learns="M (+ init)",
        learnable_lr=True,
        learned_optimizer=True,
        prime=True,
        classic=True,
        suites=("main",),
        inner_lr=Tuned(3.0, _MAIN_SEL),
        inner_lr_all=Tuned(0.1, _ALL),
        lr_grid=_GRID,
        classic_lr=Tuned(1.0, _CLASSIC_SCAN),
    )
)
METHODS.register(
    MethodInfo(
        "maml",
        "MAML: SGD inner loop via learn2learn.algorithms.MAML",
        engine="learn2learn",
        paired_baseline="learned",
        impl=_maml,
        meta_learns="init",
        learnable_lr=True,
        init_always_learned=True,
        suites=("quick", "main"),
        inner_lr=Tuned(3.0, _MAIN_SEL),
        inner_lr_all=Tuned(0.03, _STUDY.format("learned")),
        lr_grid=_GRID,
    )
)
METHODS.register(
    MethodInfo(
        "meta-sgd",
        "Meta-SGD: per-parameter step sizes via learn2learn.algorithms.MetaSGD",
        engine="learn2learn",
        impl=_meta_sgd,
        meta_learns="init + step sizes",
        init_always_learned=True,
        suites=("main",),
        inner_lr=Tuned(3.0, _MAIN_SEL),
        inner_lr_all=Tuned(0.01, _STUDY.format("learned")),
        lr_grid=_GRID,
    )
)
METHODS.register(
    MethodInfo(
        "hg",
        "HG: hypergradient per-element step sizes (Baydin et al.), via higher",
        impl=_hg,
        meta_learns="init (with --learn-init)",
        learnable_lr=True,
        optimizer_options=(("beta", "hg_beta"),),
        classic=True,
        suites=("main",),
        inner_lr=Tuned(3.0, _MAIN_SEL),
        inner_lr_all=Tuned(0.1, _ALL),
        lr_grid=_GRID,
        classic_lr=Tuned(1.0, _CLASSIC_SCAN),
    )
)
METHODS.register(
    MethodInfo(
        "sgd",
        "plain SGD, via higher",
        impl=_sgd,
        paired_baseline="fixed",
        meta_learns="init (with --learn-init)",
        learnable_lr=True,
        classic=True,
        suite_learn_init=False,
        suites=("quick", "main", "transfer"),
        inner_lr=Tuned(3.0, _SCAN),
        inner_lr_all=Tuned(0.03, _STUDY.format("fixed")),
        lr_grid=_GRID,
        classic_lr=Tuned(1.0, _CLASSIC_SCAN),
    )
)
METHODS.register(
    MethodInfo(
        "adam",
        "Adam, via higher",
        impl=_adam,
        meta_learns="init (with --learn-init)",
        classic=True,
        suite_learn_init=False,
        suites=("main", "transfer"),
        inner_lr=Tuned(0.1, _SCAN),
        inner_lr_all=Tuned(0.003, _STUDY.format("fixed")),
        lr_grid=(0.1, 0.03, 0.01),
        classic_lr=Tuned(0.03, _CLASSIC_SCAN),
    )
)

METHODS.register(
    MethodInfo(
        "prototype",
        "reference: nearest support-class centroid (Euclidean), no training",
        engine="reference",
        no_training_reference=True,
        impl=_prototype,
        meta_learns="nothing",
    )
)
METHODS.register(
    MethodInfo(
        "logreg",
        "reference: L2-penalised logistic regression on the support set, L-BFGS to convergence",
        engine="reference",
        impl=_logreg,
        meta_learns="nothing",
        optimizer_options=(("l2", "logreg_l2"),),
    )
)


# meta-train --method and train --optimizer when not given
DEFAULT_METHOD = "gwnmo"


# ---- schedules (how a learned optimizer is meta-trained) ------------------------------------


@dataclass(frozen=True)
class ScheduleInfo(Choice):
    """A meta-training schedule of the learned optimizers (``--schedule``).

    Attributes:
        suites: benchmark suites whose default schedule list includes it.
        classic: also an online schedule of classic training (``gwnmo-meta train``).
        one_step: meta-trains on the thesis's one-step look-ahead (each inner step judged on
            the next batch) rather than the query loss after all inner steps.
    """

    suites: tuple[str, ...] = ()
    classic: bool = True
    one_step: bool = True


SCHEDULES: Registry[ScheduleInfo] = Registry("schedule")
SCHEDULES.register(
    ScheduleInfo(
        "alg1",
        "thesis Algorithm 1: alg2's one-step look-ahead, meta-update one meta-step late",
        ("quick", "main"),
    )
)
SCHEDULES.register(
    ScheduleInfo(
        "alg2",
        "thesis Algorithm 2: each inner step judged on the next batch (or the query set)",
        ("quick", "main", "transfer"),
    )
)
SCHEDULES.register(
    ScheduleInfo(
        "unrolled",
        "query loss after all inner steps (MAML's objective)",
        classic=False,
        one_step=False,
    )
)

# ---- learned inner step size (``--learn-lr``) -----------------------------------------------

LEARN_LR: Registry[Choice] = Registry("learned step size")
LEARN_LR.register(Choice("off", "α fixed at --inner-lr"))
LEARN_LR.register(Choice("global", "one meta-learned α = exp(log α) for the whole target"))
LEARN_LR.register(Choice("tensor", "one meta-learned α per parameter tensor of the target"))
LEARN_LR.register(
    Choice("tensor-step", "one meta-learned α per parameter tensor and inner step (MAML++'s LSLR)")
)


# ---- base direction of GWNMO (``--base``) -----------------------------------------------------
BASES: Registry[Choice] = Registry("base direction")
BASES.register(Choice("grad", "the gradient g (the thesis): uniform h gives SGD"))
BASES.register(Choice("momentum", "SGD's momentum buffer: uniform h gives SGD with momentum"))
BASES.register(Choice("adam", "Adam's step m̂/(√v̂+ε): uniform h gives Adam"))


# ---- weighting networks M -------------------------------------------------------------------
WEIGHTINGS: Registry[Choice] = Registry("weighting")
WEIGHTINGS.register(Choice("mlp", "the thesis MLP over all parameters (size tied to the target)"))
WEIGHTINGS.register(Choice("coordinate", "one small MLP shared by every coordinate"))
WEIGHTINGS.register(Choice("factored", "one small MLP shared by every output unit (row)"))


# ---- what the inner loop adapts (--adapt) ----------------------------------------------------
ADAPT: Registry[Choice] = Registry("adapt mode")
ADAPT.register(Choice("head", "a head on frozen, cached backbone features"))
ADAPT.register(Choice("all", "conv4 + linear head from images, end to end (MAML's setting)"))


# ---- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo(Choice):
    """A torchvision image dataset, or a pool of them (``--dataset``).

    Attributes:
        num_classes: number of classes (labels 0..num_classes-1).
        sources: for a pool, the datasets it pools, in label order (empty: read from disk).
    """

    num_classes: int = 10
    sources: tuple[str, ...] = ()


DATASETS: Registry[DatasetInfo] = Registry("dataset")
DATASETS.register(DatasetInfo("mnist", "MNIST digits", 10))
DATASETS.register(DatasetInfo("fmnist", "Fashion-MNIST", 10))
DATASETS.register(DatasetInfo("cifar10", "CIFAR-10", 10))
DATASETS.register(
    DatasetInfo(
        "mixed",
        "the 30 classes of all three, pooled (classes named dataset:class, e.g. cifar10:7)",
        30,
        sources=("mnist", "fmnist", "cifar10"),
    )
)


# ---- frozen backbones E ---------------------------------------------------------------------
BACKBONES: Registry[Choice] = Registry("backbone")
BACKBONES.register(Choice("conv4", "conv4 pre-trained here on the meta-train classes only"))
BACKBONES.register(Choice("resnet18-imagenet", "torchvision's ImageNet ResNet18 (download once)"))
BACKBONES.register(Choice("none", "raw pixels"))


# ---- devices --------------------------------------------------------------------------------
DEVICES: Registry[Choice] = Registry("device")
DEVICES.register(Choice("auto", "CUDA if present, else the CPU"))
DEVICES.register(Choice("cpu", "the CPU"))
DEVICES.register(Choice("cuda", "the current CUDA device (cuda:N: device N)"))
DEVICES.register(Choice("mps", "Apple's Metal GPU, where torch has it"))

_CUDA_INDEX = re.compile(r"cuda:\d+")


def check_device(name: str) -> str:
    """``name`` if it is a registered device or ``cuda:N``, else a one-line ConfigError.

    Args:
        name: the ``--device`` value.

    Returns:
        ``name``, unchanged (availability is checked by ``device.resolve_device``).
    """
    if name in DEVICES or _CUDA_INDEX.fullmatch(name):
        return name
    raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} or cuda:N")
