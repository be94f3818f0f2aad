"""The factored weighting M: one network evaluation per output unit of each tensor, not per coordinate.

Every target tensor is viewed as a matrix [R, C]: R = its first dimension (a linear layer's or a
conv's output units), C = the product of the others (a 1-D tensor, a bias or norm scale, is
[R, 1], so it keeps one weight per coordinate). A small MLP shared by every row of every tensor
scores each row from summary statistics of that row of g and φ, and all coordinates of a row share
its weight:

    h_ij = sigmoid(a_i)   (GWNMO)        h_ij = a_i   (GWNMO')

The per-coordinate M (:class:`~gwnmo_meta.optim.nets.CoordinateWeighting`) runs its MLP once per
coordinate, which on targets of 10⁵ parameters costs far more than the target's own work. Here M's
cost is O(R) per tensor, and the GWNMO step itself needs no per-coordinate h: with h constant along
a row, ‖h∘g‖² = Σ_i h_i² ‖g_i‖² comes from the row norms M reads anyway, so a step is the row
reductions plus one fused update per tensor (a row-and-column form h_ij = σ(a_i + b_j) was measured
at ~2.8× MAML on the 134k head: it must build h, h∘g and their norms coordinate by coordinate).

Inputs per row: the mean and root-mean-square of the row of g and the root-mean-square of the row
of φ, each relative to the tensor's RMS; the tensor's log gradient scale; whether the tensor is
1-D; its depth in the target; and a task context (a projection of the batch-mean features). With a
base direction other than g (``state_inputs`` > 0), also the mean and root-mean-square of the row
of each base-state tensor (momentum's buffer; Adam's m̂ and √v̂), each relative to its tensor's
RMS, and the step weights the base direction u instead of g.

:func:`row_inputs` and :func:`unit_step` are the maths as pure functions; :class:`FactoredWeighting`
is the thin module holding the MLP. Task-batched calls (features [T, B, D], every param/grad
[T, ...]) weight each task exactly as alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

ROW_INPUTS = 6
_EPS = 1e-16


def _rows(shape: Sequence[int]) -> int:
    return shape[0] if len(shape) else 1


def _as_rows(x: Tensor, lead: int) -> Tensor:
    """[..., R, C] view of a tensor with ``lead`` task dimensions (1-D tensors: [..., R, 1])."""
    shape = x.shape[lead:]
    return x.reshape(*x.shape[:lead], _rows(shape), math.prod(shape[1:]) if len(shape) > 1 else 1)


def check_state(
    net: nn.Module, state: Sequence[Sequence[Tensor]] | None
) -> Sequence[Sequence[Tensor]]:
    """The base-state inputs a weighting network was built for (``[]`` for none); ``ValueError`` on a mismatch."""
    state = [] if state is None else state
    if len(state) != net.state_inputs:
        raise ValueError(
            f"this weighting network reads {net.state_inputs} base-state tensors, got {len(state)}"
        )
    return state


def row_sq_norms(xs: Sequence[Tensor], lead: int = 0) -> Tensor:
    """‖x_i‖² of every row of every tensor, concatenated ([..., U])."""
    return torch.cat([torch.linalg.vector_norm(_as_rows(x, lead), dim=-1).square() for x in xs], -1)


def _state_row_inputs(state: Sequence[Sequence[Tensor]], lead: int) -> Tensor:
    """[..., U, 2·len(state)]: per row, the mean and RMS of each state tensor's row, relative to its RMS."""
    cols = []
    for xs in state:
        means, rmss = [], []
        for x in xs:
            x2 = _as_rows(x, lead)
            rows, c = x2.shape[-2:]
            norm = torch.linalg.vector_norm(x2, dim=-1)
            rms = (norm.square().sum(-1, keepdim=True) / (rows * c)).add(_EPS).sqrt()
            means.append(x2.sum(-1) / (c * rms))
            rmss.append(norm / (math.sqrt(c) * rms))
        cols += [torch.cat(means, -1), torch.cat(rmss, -1)]
    return torch.stack(cols, -1)


def row_inputs(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    lead: int = 0,
    state: Sequence[Sequence[Tensor]] | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row inputs of the factored M and the rows' squared gradient norms.

    Args:
        params: the target's tensors φ (detached), each with ``lead`` leading task dimensions.
        grads: their gradients g (detached), shaped alike.
        lead: number of leading (task) dimensions (0: one task).
        state: the base direction's state tensors (lists aligned with ``params``, detached), or
            ``None``.

    Returns:
        ``(x, g_sq)``: x [..., U, ROW_INPUTS + 2·len(state)] with U the total number of rows,
        tensors in order, each row ``[mean g̃, rms g̃, rms φ̃, log-rms(g)/10, is_1d, depth]`` (g̃,
        φ̃: the tensor scaled by its own RMS, per task), then ``[mean s̃, rms s̃]`` for each state
        tensor s; g_sq [..., U] = ‖g_i‖² per row.
    """
    n = len(params)
    blocks, g_sqs = [], []
    for k, (p, g) in enumerate(zip(params, grads, strict=True)):
        g2, p2 = _as_rows(g, lead), _as_rows(p, lead)
        rows, cols = g2.shape[-2:]
        g_norm = torch.linalg.vector_norm(g2, dim=-1)  # [..., R]
        g_sq = g_norm.square()
        p_norm = torch.linalg.vector_norm(p2, dim=-1)
        rms_g = (g_sq.sum(-1, keepdim=True) / (rows * cols)).add(_EPS).sqrt()  # [..., 1]
        rms_p = (p_norm.square().sum(-1, keepdim=True) / (rows * cols)).add(_EPS).sqrt()
        root = math.sqrt(cols)
        const = torch.tensor(
            [1.0 if p.dim() - lead == 1 else 0.0, k / max(1, n - 1)], dtype=p.dtype, device=p.device
        )
        blocks.append(
            torch.cat(
                [
                    torch.stack(
                        [
                            g2.sum(-1) / (cols * rms_g),
                            g_norm / (root * rms_g),
                            p_norm / (root * rms_p),
                            (rms_g.log() / 10.0).expand_as(g_norm),
                        ],
                        -1,
                    ),
                    const.expand(*g_norm.shape, 2),
                ],
                -1,
            )
        )
        g_sqs.append(g_sq)
    x = torch.cat(blocks, -2)
    if state:
        x = torch.cat([x, _state_row_inputs(state, lead)], -1)
    return x, torch.cat(g_sqs, -1)


def _norms(h: Tensor, g_sq: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(‖g‖², ‖h∘g‖², ‖g‖, ‖h∘g‖) per task from row weights and the rows' squared gradient norms;
    the norms floored at ``eps``."""
    a2, b2 = g_sq.sum(-1), (h * h * g_sq).sum(-1)
    return a2, b2, a2.clamp_min(eps * eps).sqrt(), b2.clamp_min(eps * eps).sqrt()


class _UnitStep(torch.autograd.Function):
    """φ' = φ − α·Δ for row-shared weights h (one per row), fused, with a closed-form backward.

    GWNMO: Δ_ij = s·h_i·g_ij with s = ‖g‖/‖h∘g‖ per task, ‖h∘g‖² = Σ_i h_i²‖g_i‖² (norms floored
    at ``eps`` as in ``gwnmo_direction``; ‖g‖ is a constant for differentiation unless
    ``through_norm``); GWNMO': Δ_ij = h_i·g_ij. Differentiable once.
    """

    @staticmethod
    def forward(
        ctx: Any,
        meta: tuple,
        stats: dict[str, Tensor] | None,
        h: Tensor,
        g_sq: Tensor,
        *tensors: Tensor,
    ) -> tuple[Tensor, ...]:
        lr, eps, normalize, lead, rows, _ = meta
        n = len(rows)
        params, grads = tensors[:n], tensors[n:]
        scale: Tensor | None = None
        saved: tuple[Tensor, ...] = ()  # a, b and where their floors are free (GWNMO)
        if normalize:
            a2, b2, a, b = _norms(h, g_sq, eps)
            scale = a / b
            coef = (-lr * scale).unsqueeze(-1) * h
            saved = (a, b, (a2 >= eps * eps).to(a), (b2 >= eps * eps).to(b))
        else:
            coef = -lr * h
        new = [
            torch.addcmul(p2, g2, c.unsqueeze(-1)).view_as(p)
            for p, p2, g2, c in zip(
                params,
                (_as_rows(p, lead) for p in params),
                (_as_rows(g, lead) for g in grads),
                coef.split(list(rows), -1),
                strict=True,
            )
        ]
        if stats is not None:
            stats.update(_unit_stats(h, g_sq, rows, grads, lead, scale))
        ctx.meta = meta
        ctx.save_for_backward(h, g_sq, *saved, *grads)
        return tuple(new)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *dnew: Tensor) -> tuple[Tensor | None, ...]:
        lr, eps, normalize, lead, rows, through_norm = ctx.meta
        n = len(rows)
        h, g_sq, *rest = ctx.saved_tensors
        if normalize:
            a, b, a_free, b_free, *grads = rest
        else:
            grads = rest
        g2s = [_as_rows(g, lead) for g in grads]
        v2s = [_as_rows(v, lead) for v in dnew]
        # q_i = Σ_j g_ij·v_ij per row
        q = torch.cat([(g2 * v2).sum(-1) for g2, v2 in zip(g2s, v2s, strict=True)], -1)
        if normalize:
            s = (a / b).unsqueeze(-1)
            big_q = (h * q).sum(-1, keepdim=True)  # Σ_ij h_i g_ij v_ij
            a_, b_ = a.unsqueeze(-1), b.unsqueeze(-1)
            b_term = lr * big_q * a_ / b_.pow(3) * b_free.unsqueeze(-1)
            dh = -lr * s * q + b_term * h * g_sq
            c_v = -lr * s * h
            c_g = b_term * h * h
            if through_norm:  # the path through a = ‖g‖ (the legacy step-length loophole)
                c_g = c_g - lr * big_q / (a_ * b_) * a_free.unsqueeze(-1)
        else:
            dh = -lr * q
            c_v, c_g = -lr * h, None
        need_g = any(ctx.needs_input_grad[4 + n :])
        dgrads: list[Tensor | None] = []
        cv_parts = c_v.split(list(rows), -1)
        cg_parts = c_g.split(list(rows), -1) if c_g is not None else [None] * n
        for g, g2, v2, cv, cg in zip(grads, g2s, v2s, cv_parts, cg_parts, strict=True):
            if not need_g:
                dgrads.append(None)
                continue
            dg = v2 * cv.unsqueeze(-1)
            if cg is not None:
                dg.addcmul_(g2, cg.unsqueeze(-1))
            dgrads.append(dg.view_as(g))
        return (None, None, dh, None, *dnew, *dgrads)


def _unit_stats(
    h: Tensor,
    g_sq: Tensor,
    rows: Sequence[int],
    grads: Sequence[Tensor],
    lead: int,
    scale: Tensor | None,
) -> dict[str, Tensor]:
    """``flat_direction_stats`` (with the bias mask) of one step from per-row quantities.

    ``scale``: GWNMO's ‖g‖/‖h∘g‖ per task; ``None`` for GWNMO' (no rescaling).
    """
    cols = torch.cat(
        [
            torch.full((r,), math.prod(g.shape[lead + 1 :]), dtype=h.dtype, device=h.device)
            for r, g in zip(rows, grads, strict=True)
        ]
    )
    is_bias = torch.cat(
        [
            torch.full((r,), g.dim() - lead == 1, dtype=torch.bool, device=h.device)
            for r, g in zip(rows, grads, strict=True)
        ]
    )
    # ‖g_i‖₄² = ‖g_i²‖₂ per row, for Σ Δ⁴ = s⁴ Σ_i h_i⁴ ‖g_i‖₄⁴ (participation ratio of Δ);
    # vector_norm(ord=4) is ~40× slower than the 2-norm of g² on CPU
    g4 = torch.cat(
        [torch.linalg.vector_norm(_as_rows(g, lead).square(), dim=-1) for g in grads], -1
    )
    count = float(cols.sum())
    mean = (h * cols).sum(-1) / count
    var = ((h * h * cols).sum(-1) - count * mean * mean).clamp_min(0) / max(1.0, count - 1)
    tiny = 1e-24
    gs = g_sq.sum(-1)
    a = gs.sqrt()
    u_rows = h * h * g_sq  # ‖(h∘g)_i‖² per row
    b = u_rows.sum(-1).sqrt()
    step = (scale if scale is not None else torch.ones_like(a)) ** 2  # ‖Δ_i‖² = step · ‖(h∘g)_i‖²
    ds = step * u_rows.sum(-1)
    q = (h * h * g4) / u_rows.sum(-1, keepdim=True).clamp_min(tiny)  # Δ²-shares, squared-summed
    gb = (g_sq * is_bias).sum(-1)
    db = step * (u_rows * is_bias).sum(-1)
    return {
        "h_mean": mean,
        "h_std": var.sqrt(),
        "cos_delta_g": (h * g_sq).sum(-1) / (a * b).clamp_min(1e-12),
        "delta_over_g": ds.sqrt() / a.clamp_min(1e-12),
        "effective_coords": torch.where(
            ds > 0, 1.0 / (count * q.pow(2).sum(-1)).clamp_min(1.0), torch.zeros_like(ds)
        ),
        "step_ratio_weight": ((ds - db) / (gs - gb).clamp_min(tiny)).sqrt(),
        "step_ratio_bias": (db / gb.clamp_min(tiny)).sqrt(),
        "bias_share": (gb / gs.clamp_min(tiny)).sqrt(),
    }


def unit_stats(
    h: Tensor,
    grads: Sequence[Tensor],
    lead: int,
    *,
    normalize: bool = True,
    eps: float = 1e-12,
) -> dict[str, Tensor]:
    """The diagnostics :func:`unit_step` fills ``stats`` with, computed afterwards from its row
    weights ``h`` [..., U] and the direction it weighted (``grads``, detached).

    ``lead``: the leading dimensions of ``h`` and every tensor of ``grads`` (tasks, and e.g. a
    stack of inner steps in front of them); the statistics keep them ([...]).
    """
    rows = tuple(_rows(g.shape[lead:]) for g in grads)
    g_sq = row_sq_norms(grads, lead)
    scale = None
    if normalize:
        _, _, a, b = _norms(h, g_sq, eps)
        scale = a / b
    return _unit_stats(h, g_sq, rows, grads, lead, scale)


def unit_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    h: Tensor,
    g_sq: Tensor,
    lr: float,
    *,
    normalize: bool = True,
    eps: float = 1e-12,
    grad_through_norm: bool = False,
    stats: dict[str, Tensor] | None = None,
) -> list[Tensor]:
    """One GWNMO (or GWNMO') step with one weight per row of every tensor, fused.

    Args:
        params: the target's tensors φ, with the same leading task dimensions as ``h``.
        grads: their gradients g (second-order meta-gradients flow through them).
        h: one weight per row [..., U] (GWNMO: in (0, 1), after the sigmoid; GWNMO': raw).
        g_sq: the rows' squared gradient norms [..., U] (from :func:`row_inputs`; values only).
        lr: the inner step size α.
        normalize: GWNMO (Δ rescaled to ‖g‖ per task) or GWNMO' (Δ = h∘g).
        eps: floor of both norms, as in :func:`~gwnmo_meta.optim.direction.gwnmo_direction`.
        grad_through_norm: let the meta-gradient through ‖g‖ (as in ``gwnmo_direction``).
        stats: if given, filled with the step's detached diagnostics (h_mean, h_std, cos_delta_g,
            delta_over_g, as :func:`~gwnmo_meta.optim.direction.direction_stats`; 0-dim or per task).

    Returns:
        The updated tensors φ − α·Δ.
    """
    lead = h.dim() - 1
    rows = tuple(_rows(p.shape[lead:]) for p in params)
    meta = (float(lr), float(eps), bool(normalize), lead, rows, bool(grad_through_norm))
    return list(_UnitStep.apply(meta, stats, h, g_sq.detach(), *params, *grads))


def expand_rows(h: Tensor, shapes: Sequence[torch.Size]) -> Tensor:
    """Row weights [..., U] → the per-coordinate h they stand for, flattened ([..., P])."""
    lead = h.shape[:-1]
    parts, start = [], 0
    for shape in shapes:
        r = _rows(shape)
        c = math.prod(shape[1:]) if len(shape) > 1 else 1
        parts.append(h[..., start : start + r].unsqueeze(-1).expand(*lead, r, c).reshape(*lead, -1))
        start += r
    return torch.cat(parts, -1)


class FactoredWeighting(nn.Module):
    """Thin module over :func:`row_inputs` / :func:`unit_step`: the MLP shared by every row."""

    def __init__(
        self,
        feature_dim: int,
        hidden: int = 32,
        context: int = 8,
        init: float = 0.0,
        state_inputs: int = 0,
    ):
        super().__init__()
        self.state_inputs = state_inputs
        self.row_inputs = ROW_INPUTS + 2 * state_inputs
        self.context = nn.Linear(feature_dim, context)
        self.inp = nn.Linear(self.row_inputs + context, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.constant_(self.out.bias, init)

    def scores(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: Sequence[Sequence[Tensor]] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(raw weight per row [..., U], rows' squared gradient norms [..., U])."""
        lead = features.dim() - 2
        x, g_sq = row_inputs(params, grads, lead, check_state(self, state))
        ctx = torch.tanh(self.context(features.mean(-2)))  # [..., context]
        k = self.row_inputs
        w_row, w_ctx = self.inp.weight[:, :k], self.inp.weight[:, k:]
        first = x @ w_row.t() + (ctx @ w_ctx.t() + self.inp.bias).unsqueeze(-2)
        return self.out(torch.relu(self.mid(torch.relu(first)))).squeeze(-1), g_sq

    def forward_flat(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: Sequence[Sequence[Tensor]] | None = None,
    ) -> Tensor:
        """Raw outputs for the whole target as one [..., P] tensor (each row's score repeated)."""
        lead = features.dim() - 2
        raw, _ = self.scores(features, params, grads, state)
        return expand_rows(raw, [p.shape[lead:] for p in params])

    def forward(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: Sequence[Sequence[Tensor]] | None = None,
    ) -> list[Tensor]:
        lead = features.dim() - 2
        flat = self.forward_flat(features, params, grads, state)
        out, start = [], 0
        for p in params:
            shape = p.shape[lead:]
            size = math.prod(shape)
            out.append(flat[..., start : start + size].reshape(*flat.shape[:-1], *shape))
            start += size
        return out

    def step(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        lr: float,
        *,
        normalize: bool = True,
        grad_through_norm: bool = False,
        stats: dict[str, Tensor] | None = None,
        state: Sequence[Sequence[Tensor]] | None = None,
        direction: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """One fused inner step: (updated params, h per row). M sees φ, g and ``state`` detached.

        ``direction``: the base direction u the step weights instead of g (its state, what M reads
        of it, in ``state``); the meta-gradient flows through u.
        """
        raw, g_sq = self.scores(
            features,
            [p.detach() for p in params],
            [g.detach() for g in grads],
            None if state is None else [[s.detach() for s in xs] for xs in state],
        )
        h = torch.sigmoid(raw) if normalize else raw
        if direction is not None:
            grads = list(direction)
            g_sq = row_sq_norms([u.detach() for u in grads], features.dim() - 2)
        new = unit_step(
            params,
            grads,
            h,
            g_sq,
            lr,
            normalize=normalize,
            grad_through_norm=grad_through_norm,
            stats=stats,
        )
        return new, h
