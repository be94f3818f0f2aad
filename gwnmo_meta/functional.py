"""GWNMO as pure functions, for ``torch.func`` inner loops (no higher needed).

The step is a function of M's parameters, the batch features, the target's parameters, their
gradients and the step size, so it composes with ``torch.func.grad`` (meta-gradients through the
inner loop) and ``torch.func.vmap`` (a batch of tasks)::

    from torch.func import functional_call, grad
    from gwnmo_meta.functional import gwnmo_step

    theta = dict(M.named_parameters())                  # M: e.g. CoordinateWeighting(feature_dim)
    params = dict(model.named_parameters())
    for _ in range(steps):
        g = grad(loss_fn)(params, x, y)
        params = gwnmo_step(M, theta, x, params, g, lr=3.0)

The numbers are those of the :class:`~gwnmo_meta.optim.gwnmo.GWNMO` optimizer's step. M sees φ and
g as data (detached, as in higher's :class:`~gwnmo_meta.optim.gwnmo.DifferentiableGWNMO`); the
meta-gradient reaches M's parameters through h, and φ and g through Δ. See
examples/torch_func_loop.py for meta-training M over a batch of tasks with ``vmap(grad(...))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import overload

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gwnmo_meta.optim.direction import gwnmo_direction


def gwnmo_delta(
    weighting: nn.Module,
    features: Tensor,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    normalize: bool = True,
    *,
    weighting_params: Mapping[str, Tensor] | None = None,
    grad_through_norm: bool = False,
) -> tuple[list[Tensor], list[Tensor]]:
    """(Δ, h) for one step, with x_{t+1} = x_t − α·Δ.

    GWNMO: h = sigmoid(M(features, φ, g)) and Δ = (‖g‖/‖h∘g‖)·(h∘g); GWNMO' (``normalize=False``):
    h = M(features, φ, g) and Δ = h∘g. ``weighting_params``: M's parameters by name (run through
    ``torch.func.functional_call``); ``None`` uses the module's own. ``grad_through_norm``: see
    :func:`~gwnmo_meta.optim.direction.gwnmo_direction`.
    """
    data = (features, [p.detach() for p in params], [g.detach() for g in grads])
    if weighting_params is None:
        raw = weighting(*data)
    else:
        raw = functional_call(weighting, dict(weighting_params), data)
    h = [torch.sigmoid(r) for r in raw] if normalize else list(raw)
    delta = gwnmo_direction(
        list(grads), h, normalize=normalize, grad_through_norm=grad_through_norm
    )
    return list(delta), h


@overload
def gwnmo_step(
    weighting: nn.Module,
    weighting_params: Mapping[str, Tensor],
    features: Tensor,
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    lr: float | Tensor,
    *,
    normalize: bool = True,
    grad_through_norm: bool = False,
) -> dict[str, Tensor]: ...


@overload
def gwnmo_step(
    weighting: nn.Module,
    weighting_params: Mapping[str, Tensor],
    features: Tensor,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    lr: float | Tensor,
    *,
    normalize: bool = True,
    grad_through_norm: bool = False,
) -> list[Tensor]: ...


def gwnmo_step(
    weighting: nn.Module,
    weighting_params: Mapping[str, Tensor],
    features: Tensor,
    params: Mapping[str, Tensor] | Sequence[Tensor],
    grads: Mapping[str, Tensor] | Sequence[Tensor],
    lr: float | Tensor,
    *,
    normalize: bool = True,
    grad_through_norm: bool = False,
) -> dict[str, Tensor] | list[Tensor]:
    """One GWNMO step φ − α·Δ as a pure function of M's parameters (``torch.func`` friendly).

    Args:
        weighting: M (:class:`~gwnmo_meta.optim.nets.CoordinateWeighting`,
            :class:`~gwnmo_meta.optim.factored.FactoredWeighting` or
            :class:`~gwnmo_meta.optim.nets.ThesisMLPWeighting`); only its structure is used.
        weighting_params: M's parameters by name, e.g. ``dict(M.named_parameters())``.
        features: the batch features M reads, [B, D] (under ``vmap``: per task).
        params: the target's tensors φ, a dict by name (as ``torch.func.grad`` returns them) or a
            sequence; a dict's order is the target's parameter order.
        grads: their gradients g, in the same structure.
        lr: the step size α (a float or a 0-dim tensor, e.g. a learned one).
        normalize: GWNMO (True) or GWNMO' (False).
        grad_through_norm: let the meta-gradient through ‖g‖ (the legacy step-length loophole).

    Returns:
        The updated tensors, in the structure of ``params`` (a dict or a list).
    """
    mismatch = TypeError("params and grads must both be dicts or both be sequences")
    names: list[str] | None = None
    if isinstance(params, Mapping):
        if not isinstance(grads, Mapping):
            raise mismatch
        names = list(params)
        ps, gs = [params[k] for k in names], [grads[k] for k in names]
    elif isinstance(grads, Mapping):
        raise mismatch
    else:
        ps, gs = list(params), list(grads)
    delta, _ = gwnmo_delta(
        weighting,
        features,
        ps,
        gs,
        normalize,
        weighting_params=weighting_params,
        grad_through_norm=grad_through_norm,
    )
    new = [p - lr * d for p, d in zip(ps, delta, strict=True)]
    return new if names is None else dict(zip(names, new, strict=True))
