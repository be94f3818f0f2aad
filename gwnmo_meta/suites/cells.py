"""What a benchmark suite runs: rows (:class:`Variant`) on task sources (:class:`Source`), one
:class:`Cell` per configuration.

Both suites build their grids from these: the grid suites (``quick``, ``main``, ``transfer``: one
cell per step size of a row, scored on one or several datasets) and the ``protocol`` suite (tuned
cells, several seeds). A cell is the suite's base :class:`~gwnmo_meta.config.RunConfig` with the
cell's changes (:meth:`Cell.config`). A cell's folder is named by :attr:`Cell.key`; the grid
suites keep their older names (``grid.cell_id``), which their committed results are stored under.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gwnmo_meta.config import RunConfig
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import METHODS

# from the registry: reference rows (nothing meta-learned), init learners (MAML, Meta-SGD: only
# with a learned init) and fine-tuners (SGD, Adam, HG: nothing meta-learned with a fixed init)
NO_META_METHODS = METHODS.names(lambda m: m.engine == "reference")
INIT_LEARNERS = METHODS.names(lambda m: m.init_always_learned)
FINE_TUNERS = METHODS.names(
    lambda m: m.engine == "higher" and not m.learned_optimizer and not m.init_always_learned
)
# hyperparameters in folder names and tables
SHORT_NAMES = {"inner_lr": "lr", "hg_beta": "beta", "logreg_l2": "l2"}


@dataclass(frozen=True)
class Source:
    """Where the tasks come from: ``dataset`` (and the held-out ``test_dataset``)."""

    dataset: str
    test_dataset: str | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        """``DATASET`` or ``DATASET:TEST_DATASET``."""
        ds, _, test = text.partition(":")
        if not ds or (":" in text and not test):
            raise ConfigError(f"cannot parse source {text!r}; use DATASET or DATASET:TEST_DATASET")
        return cls(ds, test or None)

    @property
    def key(self) -> str:
        """The source in folder names: ``mixed``, ``mixed-to-cifar10``."""
        return (
            self.dataset if self.test_dataset is None else f"{self.dataset}-to-{self.test_dataset}"
        )

    @property
    def label(self) -> str:
        """The source in reports."""
        if self.test_dataset is None:
            return self.dataset
        return f"{self.dataset} → {self.test_dataset} (held out)"

    def overrides(self) -> dict[str, Any]:
        """The RunConfig fields that select this source."""
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
        """The row in folder names: its name, and a digest of its overrides when it has any."""
        slug = "".join(c if c.isalnum() or c in "-." else "_" for c in self.name)
        if not self.overrides:
            return slug
        return f"{slug}-{hashlib.sha1(repr(self.overrides).encode()).hexdigest()[:6]}"

    @property
    def schedule(self) -> str | None:
        """The schedule the row sets (``None``: the method's default)."""
        return dict(self.overrides).get("schedule")

    def regimes(self, regimes: Sequence[str]) -> list[str]:
        """The regimes this row runs in (``any`` for the regime-free reference rows)."""
        if self.method in NO_META_METHODS:
            return ["any"]
        return [r for r in regimes if not (r == "fixed" and self.method in INIT_LEARNERS)]


@dataclass(frozen=True)
class Cell:
    """One configuration of a suite: a row on a source and shot count, in an init regime, with
    hyperparameters, on one seed, and the datasets its checkpoint is scored on.

    Attributes:
        source: the task source.
        shots: K.
        variant: the row (method and overrides).
        regime: ``learned`` (the head's init is meta-learned), ``fixed`` (every task starts from
            the seed's fixed random init) or ``any`` (a reference row: no init at all).
        hparams: (RunConfig field, value) of the tuned hyperparameters (e.g. the inner step size).
        seed: the run seed (the data side keeps the base's); ``None``: the base's, for both.
        eval_datasets: datasets a checkpoint is scored on (the grid's transfer suite); empty:
            the source's own meta-test part.
    """

    source: Source
    shots: int
    variant: Variant
    regime: str
    hparams: tuple[tuple[str, Any], ...] = ()
    seed: int | None = None
    eval_datasets: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The cell's folder name: source, shots, row, regime, hyperparameters and seed."""
        hp = "-".join(f"{SHORT_NAMES.get(k, k)}{_num(v)}" for k, v in self.hparams) or "nohp"
        return (
            f"{self.source.key}-{self.shots}shot-{self.variant.key}-{self.regime}-{hp}-s{self.seed}"
        )

    @property
    def method(self) -> str:
        """The row's method."""
        return self.variant.method

    @property
    def dataset(self) -> str:
        """The source's (meta-train) dataset."""
        return self.source.dataset

    @property
    def learn_init(self) -> bool:
        """Whether the head's init is meta-learned (every regime but ``fixed``)."""
        return self.regime != "fixed"

    @property
    def inner_lr(self) -> float | None:
        """The inner step size the cell sets (``None``: the base's, or none for a reference row)."""
        return dict(self.hparams).get("inner_lr")

    @property
    def meta_trained(self) -> bool:
        """Whether the cell learns something: a fine-tuner with a fixed init learns only its step
        sizes, and only under ``learn_lr``."""
        m = self.variant.method
        learns_lr = dict(self.variant.overrides).get("learn_lr", "off") != "off"
        fixed_fine_tuner = m in FINE_TUNERS and self.regime == "fixed"
        return m not in NO_META_METHODS and not (fixed_fine_tuner and not learns_lr)

    def config(self, base: RunConfig) -> RunConfig:
        """``base`` with the cell's changes (not validated: the trainer and the evaluators, which
        run it, validate it once).

        Args:
            base: the suite's shared settings.

        Returns:
            The run configuration of the cell.
        """
        changes: dict[str, Any] = {
            **self.source.overrides(),
            "shots": self.shots,
            "method": self.method,
            "learn_init": self.learn_init,
        }
        if self.seed is not None:  # one frozen backbone per source: seeds vary meta-training
            changes.update(seed=self.seed, data_seed=base.seed)
        try:  # a row's overrides may not repeat what the cell sets (a TypeError)
            return replace(base, **changes, **dict(self.variant.overrides), **dict(self.hparams))
        except TypeError as exc:  # e.g. test_dataset on a build without it
            raise ConfigError(f"cell {self.key}: {exc}") from None


def _num(v: Any) -> str:
    """A hyperparameter's value in a name (``g`` format for a number)."""
    return format(v, "g") if isinstance(v, (int, float)) else str(v)
