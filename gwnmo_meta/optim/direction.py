"""The GWNMO update direction as a pure function (thesis Definition 4.1), and its base directions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

EPS = 1e-12


def _sq_norm(xs: Sequence[Tensor], batched: bool = False) -> Tensor:
    """Squared norm over all tensors together: a 0-dim tensor, or one per task ([T]) when ``batched``."""
    if batched:
        return torch.stack([x.pow(2).flatten(1).sum(1) for x in xs]).sum(0)
    return torch.stack([x.pow(2).sum() for x in xs]).sum()


def _per_task(v: Tensor, like: Tensor) -> Tensor:
    """A [T] tensor shaped to broadcast against ``like`` ([T, ...])."""
    return v.view(-1, *([1] * (like.dim() - 1)))


@overload
def gwnmo_direction(
    grad: Tensor,
    weights: Tensor,
    normalize: bool = ...,
    eps: float = ...,
    batched: bool = ...,
    grad_through_norm: bool = ...,
) -> Tensor: ...


@overload
def gwnmo_direction(
    grad: Sequence[Tensor],
    weights: Sequence[Tensor],
    normalize: bool = ...,
    eps: float = ...,
    batched: bool = ...,
    grad_through_norm: bool = ...,
) -> list[Tensor]: ...


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
    gs = [grad] if isinstance(grad, Tensor) else list(grad)
    hs = [weights] if isinstance(weights, Tensor) else list(weights)
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
        g_flat, h_flat, d_flat = (
            torch.cat([x.reshape(-1) for x in xs]) for xs in (grads, h, delta)
        )
        return flat_direction_stats(g_flat, h_flat, d_flat, bias_mask([g.shape for g in grads]))


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


def _safe_sqrt(v: Tensor) -> Tensor:
    """√v with a zero (not infinite) derivative where v = 0, so meta-gradients stay finite."""
    return torch.where(v > 0, v.clamp_min(torch.finfo(v.dtype).tiny).sqrt(), torch.zeros_like(v))


@dataclass(frozen=True)
class Base:
    """The base direction u that GWNMO weights (Δ = (‖u‖/‖h∘u‖)·(h∘u)); with uniform h, the base optimizer.

    ``grad``: u = g (the thesis; SGD). ``momentum``: u = b, the momentum buffer of
    ``torch.optim.SGD(momentum=μ)`` (b₁ = g₁, b_t = μ·b_{t−1} + g_t). ``adam``: u = m̂/(√v̂ + ε), the
    step direction of ``torch.optim.Adam(betas=(β1, β2), eps=ε)`` (bias-corrected moments,
    β1 = ``momentum``). The maths is per tensor and elementwise, so a tensor with a leading task
    dimension ([T, ...], a task-batched inner loop) holds T independent states.
    """

    name: str = "grad"
    momentum: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @property
    def state_inputs(self) -> int:
        """How many per-coordinate state tensors M reads besides φ and g (0, 1: b, 2: m̂ and √v̂)."""
        return {"grad": 0, "momentum": 1, "adam": 2}[self.name]

    def step(
        self, state: dict[str, Any], grad: Tensor
    ) -> tuple[dict[str, Any], Tensor, list[Tensor]]:
        """One tensor's base step: ``(new state, u, M's state inputs)``.

        Pure (``state`` is not modified), so differentiable in ``grad`` and in the old state. The
        state keys are those of torch's SGD/Adam (``momentum_buffer``; ``step``, ``exp_avg``,
        ``exp_avg_sq``), ``{}`` before the first step.
        """
        if self.name == "grad":
            return {}, grad, []
        if self.name == "momentum":
            buf = state.get("momentum_buffer")
            buf = grad.clone() if buf is None else buf * self.momentum + grad  # never alias p.grad
            return {"momentum_buffer": buf}, buf, [buf]
        if self.name != "adam":
            raise ValueError(f"unknown base direction {self.name!r}")
        b1, b2 = self.momentum, self.beta2
        step = int(state.get("step", 0)) + 1
        if step == 1:
            m, v = (1 - b1) * grad, (1 - b2) * grad * grad
        else:
            m = state["exp_avg"] * b1 + (1 - b1) * grad
            v = state["exp_avg_sq"] * b2 + (1 - b2) * grad * grad
        m_hat = m / (1 - b1**step)
        v_root = _safe_sqrt(v) / math.sqrt(1 - b2**step)
        u = m_hat / (v_root + self.eps)
        return {"step": step, "exp_avg": m, "exp_avg_sq": v}, u, [m_hat, v_root]

    def steps(
        self, states: Sequence[dict[str, Any]], grads: Sequence[Tensor]
    ) -> tuple[list[dict[str, Any]], list[Tensor], list[list[Tensor]] | None]:
        """:meth:`step` for every tensor: (new states, u per tensor, M's state inputs or ``None``).

        M's state inputs are ``state_inputs`` lists aligned with ``grads`` (``None`` for ``grad``,
        so M is called exactly as without a base).
        """
        out = [self.step(s, g) for s, g in zip(states, grads, strict=True)]
        inputs = [[o[2][k] for o in out] for k in range(self.state_inputs)] or None
        return [o[0] for o in out], [o[1] for o in out], inputs
