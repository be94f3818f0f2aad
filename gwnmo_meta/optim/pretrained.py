"""A meta-trained weighting network M out of a checkpoint, ready for :class:`~gwnmo_meta.GWNMO`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from gwnmo_meta.errors import CheckpointError


def load_weighting(
    path: str | Path,
    param_shapes: Sequence[Sequence[int]] | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """M as meta-trained (``meta-train --method gwnmo``) or learned online (``train``).

    Use it as ``GWNMO(model.parameters(), weighting_net=load_weighting(path), lr=...)``; pass
    ``normalize=False`` for an M trained as GWNMO' (see :func:`weighting_is_prime`) and
    ``base=weighting_base(path)`` for an M trained over another base direction.

    Args:
        path: a checkpoint written by ``gwnmo-meta meta-train`` (best.pt, last.pt) or the
            ``weighting.pt`` written by ``gwnmo-meta train``.
        param_shapes: the target's parameter shapes; needed only for the thesis ``mlp`` M, whose
            size is tied to the target it was trained on (the per-coordinate M fits any target).
        device: where to put M.

    Returns:
        The weighting network with the checkpoint's weights, in eval mode.

    Raises:
        CheckpointError: the file is not a checkpoint, holds no M, or ``param_shapes`` does not
            fit the thesis MLP it holds.
    """
    from gwnmo_meta.io.checkpoint import load_checkpoint
    from gwnmo_meta.optim.direction import Base
    from gwnmo_meta.optim.nets import build_weighting
    from gwnmo_meta.training.classic_learners import load_weighting_state

    cfg = load_checkpoint(path).get("config", {})
    state = load_weighting_state(path)
    kind = cfg.get("weighting", "coordinate")
    hidden = cfg.get("weighting_hidden", 32)
    inputs = Base(_base(cfg)).state_inputs
    if kind == "mlp":
        if param_shapes is None:
            raise CheckpointError(
                f"{path} holds the thesis MLP M, which is tied to its target: pass param_shapes"
            )
        count = sum(math.prod(s) for s in param_shapes)
        feature_dim = state["net.0.weight"].shape[1] - (2 + inputs) * count
    else:
        feature_dim = state["context.weight"].shape[1]
    net = build_weighting(
        kind, feature_dim, param_shapes or [], hidden=hidden, prime=_prime(cfg), state_inputs=inputs
    )
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(
            f"the weighting network in {path} does not fit the given param_shapes"
        ) from None
    return net.to(device).eval()


def weighting_is_prime(path: str | Path) -> bool:
    """Whether the M in ``path`` was trained as GWNMO' (use ``GWNMO(..., normalize=False)``).

    Args:
        path: a gwnmo-meta checkpoint.

    Returns:
        ``True`` for GWNMO' (raw weights), ``False`` for GWNMO.
    """
    from gwnmo_meta.io.checkpoint import load_checkpoint

    return _prime(load_checkpoint(path).get("config", {}))


def weighting_base(path: str | Path) -> str:
    """The base direction the M in ``path`` was trained over (``GWNMO(..., base=...)``).

    Args:
        path: a gwnmo-meta checkpoint.

    Returns:
        ``grad`` (the thesis; also every checkpoint written before the option), ``momentum`` or
        ``adam``.
    """
    from gwnmo_meta.io.checkpoint import load_checkpoint

    return _base(load_checkpoint(path).get("config", {}))


def _base(cfg: dict) -> str:
    from gwnmo_meta.registry import BASES

    base = cfg.get("base", "grad")
    if not isinstance(base, str) or base not in BASES:
        raise CheckpointError(f"the checkpoint's config names an unknown base direction {base!r}")
    return base


def _prime(cfg: dict) -> bool:
    from gwnmo_meta.registry import DEFAULT_METHOD, METHODS

    name = cfg.get(
        "method", cfg.get("optimizer", DEFAULT_METHOD)
    )  # meta-train / classic checkpoints
    return name in METHODS and METHODS[name].prime
