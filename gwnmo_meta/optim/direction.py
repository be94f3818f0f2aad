"""The GWNMO update direction as a pure function (thesis Definition 4.1)."""

from __future__ import annotations

import math
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
    grad_through_norm: bool = False,
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

    The normaliser ‖g‖ (the step length) is a constant for differentiation unless
    ``grad_through_norm``: a meta-gradient then cannot buy a longer step by shaping ‖g‖ (the
    step-length loophole, docs/ALGORITHMS.md); the direction keeps its full dependence on g and h.
    """
    single = isinstance(grad, Tensor)
    gs = [grad] if single else list(grad)
    hs = [weights] if single else list(weights)
    if len(gs) != len(hs):
        raise ValueError(f"got {len(gs)} gradients but {len(hs)} weight tensors")
    hg = [h * g for h, g in zip(hs, gs, strict=False)]
    if normalize:
        g_sq = _sq_norm(gs if grad_through_norm else [g.detach() for g in gs], batched)
        g_norm = g_sq.clamp_min(eps * eps).sqrt()
        hg_norm = _sq_norm(hg, batched).clamp_min(eps * eps).sqrt()
        scale = g_norm / hg_norm
        hg = [(_per_task(scale, x) if batched else scale) * x for x in hg]
    return hg[0] if single else hg


class _TaskNormalisedDirection(torch.autograd.Function):
    """Δ = (‖g‖/‖h∘g‖)·(h∘g) per row of [T, P] tensors, with a closed-form (first-order) backward.

    The same function as ``gwnmo_direction(g, h, batched=True)`` (including the ``eps`` floors,
    whose gradient is zero where they bind), as one autograd node instead of a dozen; used by the
    task-batched inner loop, where it is on the hot path. ``through_norm``: whether the backward
    includes the path through a = ‖g‖ (``grad_through_norm`` of :func:`gwnmo_direction`).
    """

    @staticmethod
    def forward(ctx: Any, g: Tensor, h: Tensor, eps: float, through_norm: bool) -> Tensor:
        u = h * g
        a2, b2 = g.pow(2).sum(-1, keepdim=True), u.pow(2).sum(-1, keepdim=True)
        a, b = a2.clamp_min(eps * eps).sqrt(), b2.clamp_min(eps * eps).sqrt()
        ctx.save_for_backward(g, h, u, a, b, a2 >= eps * eps, b2 >= eps * eps)
        ctx.through_norm = through_norm
        return (a / b) * u

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        g, h, u, a, b, a_free, b_free = ctx.saved_tensors
        uv = (u * v).sum(-1, keepdim=True)
        # Δ = (a/b)·u: through u directly, through b = ‖u‖, and (through_norm) through a = ‖g‖
        du = (a / b) * v - (a * uv / b.pow(3) * b_free) * u
        dg = None
        if ctx.needs_input_grad[0]:
            dg = h * du
            if ctx.through_norm:
                dg = dg + (uv / (a * b) * a_free) * g
        dh = g * du if ctx.needs_input_grad[1] else None
        return dg, dh, None, None


def task_normalised_direction(
    grad: Tensor, weights: Tensor, eps: float = EPS, grad_through_norm: bool = False
) -> Tensor:
    """``gwnmo_direction(grad, weights, batched=True, ...)`` for single [T, P] tensors, as one fused autograd node.

    Differentiable once (enough for meta-gradients, which never differentiate the update twice).
    """
    return _TaskNormalisedDirection.apply(grad, weights, eps, grad_through_norm)


def direction_stats(
    grads: Sequence[Tensor], h: Sequence[Tensor], delta: Sequence[Tensor]
) -> dict[str, Tensor]:
    """Detached diagnostics of one step (0-dim tensors, no host sync): see :func:`flat_direction_stats`.

    One-dimensional tensors are the target's biases, the others its weights.
    """
    with torch.no_grad():
        flat = (torch.cat([x.reshape(-1) for x in xs]) for xs in (grads, h, delta))
        return flat_direction_stats(*flat, bias_mask=bias_mask([g.shape for g in grads]))


def bias_mask(shapes: Sequence[Sequence[int]]) -> Tensor:
    """Flat bool mask over a target's coordinates: True on biases (1-D tensors)."""
    return torch.cat([torch.full((math.prod(s),), len(s) == 1) for s in shapes])


def _participation_ratio(d2: Tensor, ds: Tensor, n: int) -> Tensor:
    """(Σ Δᵢ²)² / (P·Σ Δᵢ⁴) from Δ² and Σ Δ², on Δ²/ΣΔ² (scale-free: tiny steps do not underflow); 0 for Δ = 0."""
    q = d2 / ds.clamp_min(EPS * EPS).unsqueeze(-1)
    denom = n * q.pow(2).sum(-1)
    return torch.where(ds > 0, 1.0 / denom.clamp_min(1.0), torch.zeros_like(ds))


def flat_direction_stats(
    g: Tensor, h: Tensor, delta: Tensor, bias_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Diagnostics of flattened g, h, Δ ([..., P]): one value per leading index.

    ``cos_delta_g`` = cos(Δ, g); ``delta_over_g`` = ‖Δ‖/‖g‖ (1 for GWNMO by construction);
    ``effective_coords`` = (Σ Δᵢ²)² / (P·Σ Δᵢ⁴), the participation ratio of Δ (1: all coordinates
    move equally, 1/P: one coordinate moves); ``h_mean``/``h_std`` of the weights. With
    ``bias_mask`` ([P], True on biases) also ``step_ratio_weight`` = ‖Δ_W‖/‖g_W‖ over the weight
    tensors, ``step_ratio_bias`` = ‖Δ_b‖/‖g_b‖ over the biases, ``bias_share`` = ‖g_b‖/‖g‖.
    """
    with torch.no_grad():
        g2, d2 = g.pow(2), delta.pow(2)
        gs, ds = g2.sum(-1), d2.sum(-1)
        gn, dn = gs.sqrt(), ds.sqrt()
        h_mean = h.mean(-1, keepdim=True)
        n = h.shape[-1]
        # sample std by hand: Tensor.std over the last dim is ~7× slower on CPU here
        h_std = (h - h_mean).pow_(2).sum(-1).div_(n - 1).sqrt_() if n > 1 else torch.zeros_like(gn)
        out = {
            "h_mean": h_mean.squeeze(-1),
            "h_std": h_std,
            "cos_delta_g": (delta * g).sum(-1) / (gn * dn).clamp_min(EPS),
            "delta_over_g": dn / gn.clamp_min(EPS),
            "effective_coords": _participation_ratio(d2, ds, n),
        }
        if bias_mask is not None:
            m = bias_mask.to(g.device, g.dtype)
            gb, db = (g2 * m).sum(-1), (d2 * m).sum(-1)
            out["step_ratio_weight"] = ((ds - db) / (gs - gb).clamp_min(EPS * EPS)).sqrt()
            out["step_ratio_bias"] = (db / gb.clamp_min(EPS * EPS)).sqrt()
            out["bias_share"] = (gb / gs.clamp_min(EPS * EPS)).sqrt()
        return out
