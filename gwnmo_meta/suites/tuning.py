"""Equal-budget tuning of the protocol suite: a log-spaced grid per hyperparameter, extended at
the edges.

Every hyperparameter a method has gets the same grid — ``grid_points`` rungs of the half-decade
ladder 1, 3, 10, 30, ... centred on the method's default — extended by one rung at a time (up to
:data:`MAX_EXTENSIONS`) while the best value sits at an edge; several hyperparameters are tuned one
after the other, each at the others' chosen values (:func:`tune`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gwnmo_meta.config import RunConfig, base_default_lr
from gwnmo_meta.registry import METHODS

MAX_EXTENSIONS = 3  # extra rungs per hyperparameter and direction when the best sits at an edge


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


@dataclass
class TuningResult:
    """What :func:`tune` selected for one row (on seed 0's meta-val) and what it tried.

    (Not :class:`gwnmo_meta.registry.Tuned`, which is a default value with its provenance.)
    """

    hparams: tuple[tuple[str, float], ...]
    tried: list[dict[str, Any]] = field(default_factory=list)
    at_edge: list[str] = field(default_factory=list)  # hyperparameters still best at a grid edge


def tune(
    axes: Sequence[tuple[str, float]],
    score: Callable[[tuple[tuple[str, float], ...]], float | None],
    grid_points: int = 3,
) -> TuningResult:
    """Coordinate-wise grid search on the half-decade ladder, extending grids at the edges.

    Args:
        axes: (name, centre) per hyperparameter, tuned in this order.
        score: meta-val accuracy of a configuration (``None``: diverged, never selected).
        grid_points: rungs per hyperparameter before extensions (odd: centred on the default).

    Returns:
        :class:`TuningResult` with the selection and every configuration tried (in order).
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
    return TuningResult(tuple(hp.items()), tried, at_edge)
