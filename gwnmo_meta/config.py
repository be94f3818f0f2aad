"""The resolved configuration of a meta-training run (written to RUN_DIR/config.json)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gwnmo_meta import defaults
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import (
    ADAPT,
    BACKBONES,
    BASES,
    DATASETS,
    DEFAULT_METHOD,
    LEARN_LR,
    METHODS,
    SCHEDULES,
    WEIGHTINGS,
    MethodInfo,
    check_device,
)

_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": ()}


def _has_type(value: Any, annotation: str) -> bool:
    """Whether ``value`` (e.g. read from a checkpoint) fits a field annotated ``annotation``."""
    for name in (a.strip() for a in annotation.split("|")):
        if value is None and name == "None":
            return True
        if isinstance(value, bool) and name != "bool":
            continue
        if isinstance(value, _TYPES.get(name, (object,))):
            return True
    return False


SEED_MAX = 2**32 - 1
# RunConfig's layout. 1: ``schedule`` defaulted to "alg2" and only GWNMO/GWNMO' read it (every other
# method ran MAML's unrolled objective); 2: it defaults to None (the method's default) and every
# meta-learning method reads it.
SCHEMA = 3


def check_finite(flag: str, value: Any) -> None:
    """``ConfigError`` if ``value`` is a NaN or infinite float (other values pass)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")


def check_positive(flag: str, value: float) -> None:
    """``ConfigError`` unless ``value`` is a finite number > 0 (NaN and Inf are refused)."""
    check_finite(flag, value)
    if not value > 0:
        raise ConfigError(f"{flag} must be positive, got {value}")


def check_base(base: str, momentum: float, beta2: float, learned: bool, method_flag: str) -> None:
    """``ConfigError`` unless the base-direction options fit (``learned``: a learned optimizer).

    Args:
        base: the ``--base`` value; anything but ``grad`` needs a learned optimizer.
        momentum: ``--base-momentum`` (momentum's μ, Adam's β1), in [0, 1).
        beta2: ``--base-beta2`` (Adam's β2), in [0, 1).
        learned: whether the method or optimizer is GWNMO / GWNMO'.
        method_flag: how the method was chosen, for the message (``--method adam``).
    """
    BASES.check(base, "--base")
    if base != "grad" and not learned:
        names = " and ".join(METHODS.names(lambda m: m.learned_optimizer))
        raise ConfigError(f"--base applies to {names} only, not to {method_flag}")
    for flag, value, default, users in (
        ("--base-momentum", momentum, defaults.BASE_MOMENTUM.value, ("momentum", "adam")),
        ("--base-beta2", beta2, defaults.BASE_BETA2.value, ("adam",)),
    ):
        check_finite(flag, value)
        if not 0 <= value < 1:
            raise ConfigError(f"{flag} must be in [0, 1), got {value}")
        if value != default and base not in users:
            raise ConfigError(f"{flag} applies to --base {' or '.join(users)} only, not {base}")


# GWNMO over a base direction starts from the base optimizer's tuned step size (with uniform h it
# is that optimizer): Adam's for adam; plain SGD's times (1 − μ) for momentum, the same step
# length once the momentum buffer has built up.
BASE_LR_METHOD = {"momentum": "sgd", "adam": "adam"}


def base_default_lr(base: str, momentum: float, tuned: Any) -> float | None:
    """The default step size of GWNMO over ``base`` (``None`` for ``grad``: the method's own).

    Args:
        base: the base direction.
        momentum: ``--base-momentum`` (μ).
        tuned: ``MethodInfo`` → its ``Tuned`` step size (or ``None``) for the mode at hand.

    Returns:
        The step size, or ``None``.
    """
    if base not in BASE_LR_METHOD:
        return None
    value = tuned(METHODS[BASE_LR_METHOD[base]]).value
    return value * (1 - momentum) if base == "momentum" else value


def check_seed(flag: str, seed: int) -> None:
    """``ConfigError`` unless ``0 <= seed <= 2**32 - 1``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{flag} must be an integer from 0 to {SEED_MAX}, got {seed}")


@dataclass
class RunConfig:
    """Everything that defines a meta-training run; CLI flags map one-to-one onto these fields."""

    # data
    dataset: str = "mnist"
    test_dataset: str | None = None  # mixed: leave this dataset out (its classes are meta-test)
    data_root: str | None = None
    download: bool = False
    skip_integrity_check: bool = False
    backbone: str = "conv4"
    train_classes: str | None = None
    val_classes: str | None = None
    test_classes: str | None = None
    keep_image_split: bool = False
    # tasks
    ways: int = 5
    shots: int = 1
    query: int = 15
    # method
    method: str = DEFAULT_METHOD
    schedule: str | None = None  # None: the method's default (schedule_name)
    weighting: str = defaults.WEIGHTING
    weighting_hidden: int = int(defaults.WEIGHTING_HIDDEN.value)
    inner_steps: int = 5
    inner_lr: float | None = None
    meta_lr: float = defaults.META_LR.value
    learn_init: bool = True
    first_order: bool = False
    head_hidden: int | None = None
    task_batch: bool = True
    inner_batch: int | None = None
    judge_queries: int | None = None  # look-ahead judge: sampled query rows per class (None: all)
    learn_lr: str = "off"
    grad_through_norm: bool = False
    base: str = "grad"  # GWNMO's base direction: grad (the thesis), momentum or adam
    base_momentum: float = defaults.BASE_MOMENTUM.value  # momentum's μ, Adam's β1
    base_beta2: float = defaults.BASE_BETA2.value  # Adam's β2
    hg_beta: float = defaults.HG_BETA.value  # HG's hypergradient step size
    logreg_l2: float = defaults.LOGREG_L2.value  # logreg's L2 penalty λ on the weights
    adapt: str = "head"  # head: frozen backbone, cached features; all: conv4 + head from images
    conv_bias: bool = False  # --adapt all: conv biases (BatchNorm cancels them)
    # loop
    meta_batch: int = 4
    meta_steps: int = 1000
    val_every: int = 100
    val_tasks: int = 200
    device: str = "auto"
    seed: int = 0
    # seed of the data side (conv4 pre-training, held-out image split); None: ``seed``. Lets runs
    # that differ only in their meta-training seed share one frozen backbone (benchmark protocol)
    data_seed: int | None = None
    # the layout of this dataclass, written to config.json and checkpoints; older files
    # (no key) are migrated by from_dict
    schema: int = SCHEMA

    @property
    def schedule_name(self) -> str:
        """The meta-training schedule in force: ``schedule``, else the method's default (alg2 for
        a learned optimizer, MAML's ``unrolled`` objective for every other method)."""
        if self.schedule is not None:
            return self.schedule
        info = METHODS.get(self.method)
        return "alg2" if info is not None and info.learned_optimizer else "unrolled"

    def validate(self) -> RunConfig:
        """Check every field: the method's options (:meth:`validate_method`), then the data, the
        tasks and the loop; returns ``self``.

        The one validation of a run's configuration: the function that receives a config from
        its builder (``meta_train``, the evaluators) calls it once, and everything downstream
        reads ``cfg`` as valid. Data specifics (class splits, image counts) are checked where the
        data are loaded.
        """
        self.validate_method()
        DATASETS.check(self.dataset)
        if self.test_dataset is not None:
            pool = DATASETS[self.dataset].sources
            if self.test_dataset not in pool:
                raise ConfigError(
                    f"--test-dataset {self.test_dataset} needs --dataset mixed and one of its "
                    f"datasets ({', '.join(DATASETS['mixed'].sources)}); got --dataset {self.dataset}"
                )
        BACKBONES.check(self.backbone)
        check_device(self.device)
        for name in (
            "ways",
            "shots",
            "query",
            "meta_batch",
            "meta_steps",
            "val_every",
            "val_tasks",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}"
                )
        for f in dataclasses.fields(self):  # NaN/Inf slip past "x <= 0": refuse them first
            check_finite(f"--{f.name.replace('_', '-')}", getattr(self, f.name))
        check_seed("--seed", self.seed)
        if self.data_seed is not None:
            check_seed("--data-seed", self.data_seed)
        if self.inner_batch is not None:
            self._validate_inner_batch(self.inner_batch)
        return self

    def validate_method(self) -> RunConfig:
        """Check what a method reads (``build_method`` checks only this: the tasks it adapts on
        are the caller's); returns ``self``."""
        info = METHODS.check(self.method)
        if self.schedule is not None:
            SCHEDULES.check(self.schedule)
            if info.engine == "reference":
                raise ConfigError(
                    f"--schedule: --method {self.method} has no inner loop to meta-train"
                )
        self._check_learn_lr(info)
        WEIGHTINGS.check(self.weighting)
        self._check_base(info)
        if self.inner_steps <= 0:
            raise ConfigError(f"--inner-steps must be positive, got {self.inner_steps}")
        check_positive("--meta-lr", self.meta_lr)
        if self.weighting_hidden <= 0:
            raise ConfigError(f"--weighting-hidden must be positive, got {self.weighting_hidden}")
        if self.head_hidden is not None and self.head_hidden <= 0:
            raise ConfigError(f"--head-hidden must be positive, got {self.head_hidden}")
        check_positive("--hg-beta", self.hg_beta)
        check_positive("--logreg-l2", self.logreg_l2)
        if self.inner_lr is not None:
            check_positive("--inner-lr", self.inner_lr)
        self._check_judge_queries()
        ADAPT.check(self.adapt, "--adapt")
        if info.init_always_learned and not self.learn_init:
            raise ConfigError(
                f"--method {self.method} always meta-learns the init; drop --no-learn-init"
            )
        if self.adapt == "all" and info.engine == "reference":
            raise ConfigError(
                f"--adapt all needs an inner loop; --method {self.method} has none (use --adapt head)"
            )
        return self

    def _check_base(self, info: MethodInfo) -> None:
        """The base-direction options (:func:`check_base`): only for the learned optimizers."""
        check_base(
            self.base,
            self.base_momentum,
            self.base_beta2,
            info.learned_optimizer,
            f"--method {self.method}",
        )

    def _validate_inner_batch(self, inner_batch: int) -> None:
        """Class-balanced mini-batches of the support set; a look-ahead schedule needs disjoint ones."""
        per_class = inner_batch // self.ways
        if inner_batch % self.ways or not 0 < per_class <= self.shots:
            raise ConfigError(
                f"--inner-batch must be a multiple of --ways ({self.ways}) between {self.ways} and "
                f"the support set's {self.ways * self.shots} examples, got {inner_batch}"
            )
        one_step = SCHEDULES[self.schedule_name].one_step
        if one_step and 2 * per_class > self.shots:
            raise ConfigError(
                f"--schedule {self.schedule_name} judges each inner step on the next mini-batch, which "
                f"must not share examples with it: --inner-batch {inner_batch} takes "
                f"{per_class} of the {self.shots} shots per class; use at most "
                f"{self.ways * (self.shots // 2)} (needs --shots >= 2) or no --inner-batch"
            )

    def _check_learn_lr(self, info: MethodInfo) -> None:
        """``--learn-lr``: a registered mode, for a method whose step size can be learned."""
        LEARN_LR.check(self.learn_lr, "--learn-lr")
        if self.learn_lr != "off" and not info.learnable_lr:
            learnable = ", ".join(METHODS.names(lambda m: m.learnable_lr))
            raise ConfigError(f"--learn-lr applies to {learnable}, not to --method {self.method}")

    def _check_judge_queries(self) -> None:
        """A sampled judge (when set): 1..query rows per class, for a look-ahead schedule."""
        if self.judge_queries is None:
            return
        if not 0 < self.judge_queries <= self.query:
            raise ConfigError(
                f"--judge-queries must be between 1 and --query ({self.query}), got {self.judge_queries}"
            )
        if not SCHEDULES[self.schedule_name].one_step:
            one_step = ", ".join(SCHEDULES.names(lambda s: s.one_step))
            raise ConfigError(
                f"--judge-queries samples the look-ahead judge of --schedule {one_step}; "
                f"--method {self.method} --schedule {self.schedule_name} has none"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (field names as keywords)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from :meth:`to_dict`'s output; unknown keys are a ``ConfigError``.

        Args:
            data: field name → value (missing fields take their defaults).

        Returns:
            The config (not yet validated).
        """
        data = cls._migrate(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        for f in dataclasses.fields(cls):
            if f.name in data and not _has_type(data[f.name], str(f.type)):
                raise ConfigError(
                    f"configuration key {f.name!r} should be {f.type}, got {data[f.name]!r}"
                )
        return cls(**data)

    @staticmethod
    def _migrate(data: dict[str, Any]) -> dict[str, Any]:
        """An older layout's fields in today's terms, so its runs resume and evaluate unchanged."""
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= SCHEMA:
            raise ConfigError(f"configuration key 'schema' should be 1 to {SCHEMA}, got {schema!r}")
        data = {**data, "schema": SCHEMA}
        info = METHODS.get(data.get("method", DEFAULT_METHOD))
        if schema < 2 and "schedule" in data and not (info is not None and info.learned_optimizer):
            data["schedule"] = None  # schema 1: only GWNMO/GWNMO' read it; the rest ran unrolled
        if schema < 3:
            data.setdefault("conv_bias", True)  # schema 1-2: conv4's convolutions had biases
        return data

    def save(self, path: Path) -> None:
        """Write the config as JSON (RUN_DIR/config.json), atomically."""
        from gwnmo_meta.io.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a config written by :meth:`save`.

        Args:
            path: a RUN_DIR/config.json.

        Returns:
            The config (not yet validated).

        Raises:
            ConfigError: the file is missing, not a regular file, over 1 MiB, not JSON, or holds
                unknown keys.
        """
        from gwnmo_meta.io.userfiles import read_small_text

        path = Path(path)
        text = read_small_text(path, "config")  # a regular file of at most 1 MiB
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise ConfigError(f"config {path} is not valid JSON") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} does not hold a JSON object")
        return cls.from_dict(data)
