"""The GWNMO update direction as a pure function (thesis Definition 4.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

Grads = TypeVar("Grads", Tensor, Sequence[Tensor])

EPS = 1e-12


def _sq_norm(xs: Sequence[Tensor], batched: bool = False) -> Tensor:
    """Squared norm over all tensors together: a 0-dim tensor, or one per task ([T]) when ``batched``."""
    if batched:
        return torch.stack([x.pow(2).flatten(1).sum(1) for x in xs]).sum(0)
    return torch.stack([x.pow(2).sum() for x in xs]).sum()


def _per_task(v: Tensor, like: Tensor) -> Tensor:
    """A [T] tensor shaped to broadcast against ``like`` ([T, ...])."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def gwnmo_direction(
    grad: Tensor | Sequence[Tensor],
    weights: Tensor | Sequence[Tensor],
    normalize: bool = True,
    eps: float = EPS,
    batched: bool = False,
) -> Tensor | list[Tensor]:
    """Δ such that x_{t+1} = x_t − α·Δ.

    ``normalize=True`` (GWNMO): Δ = (‖g‖/‖h∘g‖)·(h∘g), with ``weights`` = h ∈ (0, 1) (already
    through the sigmoid); ``normalize=False`` (GWNMO'): Δ = h∘g. ``grad``/``weights`` are a tensor
    or matching sequences of tensors (all of the target's parameters): norms are taken over the
    whole flattened parameter vector. Both norms are floored at ``eps`` before the square root is
    differentiated, so a zero gradient gives Δ = 0 and a numerically vanishing h∘g gives a finite
    Δ (0 when h∘g underflows to exactly 0) — never NaN or Inf, in values or in gradients.

    ``batched=True``: the leading dimension of every tensor indexes independent tasks (a
    task-batched inner loop) and the norms are taken per task, so each task's Δ is exactly what
    the unbatched call on that task alone gives.
    """
    single = isinstance(grad, Tensor)
    gs = [grad] if single else list(grad)
    hs = [weights] if single else list(weights)
    if len(gs) != len(hs):
        raise ValueError(f"got {len(gs)} gradients but {len(hs)} weight tensors")
    hg = [h * g for h, g in zip(hs, gs, strict=False)]
    if normalize:
        g_norm = _sq_norm(gs, batched).clamp_min(eps * eps).sqrt()
        hg_norm = _sq_norm(hg, batched).clamp_min(eps * eps).sqrt()
        scale = g_norm / hg_norm
        hg = [(_per_task(scale, x) if batched else scale) * x for x in hg]
    return hg[0] if single else hg


class _TaskNormalisedDirection(torch.autograd.Function):
    """Δ = (‖g‖/‖h∘g‖)·(h∘g) per row of [T, P] tensors, with a closed-form (first-order) backward.

    The same function as ``gwnmo_direction(g, h, batched=True)`` (including the ``eps`` floors,
    whose gradient is zero where they bind), as one autograd node instead of a dozen; used by the
    task-batched inner loop, where it is on the hot path.
    """

    @staticmethod
    def forward(ctx: Any, g: Tensor, h: Tensor, eps: float) -> Tensor:
        u = h * g
        a2, b2 = g.pow(2).sum(-1, keepdim=True), u.pow(2).sum(-1, keepdim=True)
        a, b = a2.clamp_min(eps * eps).sqrt(), b2.clamp_min(eps * eps).sqrt()
        ctx.save_for_backward(g, h, u, a, b, a2 >= eps * eps, b2 >= eps * eps)
        return (a / b) * u

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        g, h, u, a, b, a_free, b_free = ctx.saved_tensors
        uv = (u * v).sum(-1, keepdim=True)
        # Δ = (a/b)·u: through u directly, through b = ‖u‖ and through a = ‖g‖ (where not floored)
        du = (a / b) * v - (a * uv / b.pow(3) * b_free) * u
        dg = h * du + (uv / (a * b) * a_free) * g if ctx.needs_input_grad[0] else None
        dh = g * du if ctx.needs_input_grad[1] else None
        return dg, dh, None


def task_normalised_direction(grad: Tensor, weights: Tensor, eps: float = EPS) -> Tensor:
    """``gwnmo_direction(grad, weights, batched=True)`` for single [T, P] tensors, as one fused autograd node.

    Differentiable once (enough for meta-gradients, which never differentiate the update twice).
    """
    return _TaskNormalisedDirection.apply(grad, weights, eps)


def direction_stats(
    grads: Sequence[Tensor], h: Sequence[Tensor], delta: Sequence[Tensor]
) -> dict[str, Tensor]:
    """Detached diagnostics of one step: mean/std of h, cos(Δ, g), ‖Δ‖/‖g‖ (0-dim tensors, no host sync)."""
    with torch.no_grad():
        return flat_direction_stats(
            *(torch.cat([x.reshape(-1) for x in xs]) for xs in (grads, h, delta))
        )


def flat_direction_stats(g: Tensor, h: Tensor, delta: Tensor) -> dict[str, Tensor]:
    """:func:`direction_stats` of flattened g, h, Δ ([..., P]): one value per leading index."""
    with torch.no_grad():
        gn, dn = g.norm(dim=-1), delta.norm(dim=-1)
        h_mean = h.mean(-1, keepdim=True)
        n = h.shape[-1]
        # sample std by hand: Tensor.std over the last dim is ~7× slower on CPU here
        h_std = (h - h_mean).pow_(2).sum(-1).div_(n - 1).sqrt_() if n > 1 else torch.zeros_like(gn)
        return {
            "h_mean": h_mean.squeeze(-1),
            "h_std": h_std,
            "cos_delta_g": (delta * g).sum(-1) / (gn * dn).clamp_min(EPS),
            "delta_over_g": dn / gn.clamp_min(EPS),
        }
