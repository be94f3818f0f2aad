"""The GWNMO update direction as a pure function (thesis Definition 4.1)."""
from __future__ import annotations

from typing import Sequence, TypeVar, Union

import torch
from torch import Tensor

Grads = TypeVar("Grads", Tensor, Sequence[Tensor])

EPS = 1e-12


def _sq_norm(xs: Sequence[Tensor]) -> Tensor:
    return torch.stack([x.pow(2).sum() for x in xs]).sum()


def gwnmo_direction(grad: Union[Tensor, Sequence[Tensor]], weights: Union[Tensor, Sequence[Tensor]],
                    normalize: bool = True, eps: float = EPS) -> Union[Tensor, list[Tensor]]:
    """Δ such that x_{t+1} = x_t − α·Δ.

    ``normalize=True`` (GWNMO): Δ = (‖g‖/‖h∘g‖)·(h∘g), with ``weights`` = h ∈ (0, 1) (already
    through the sigmoid); ``normalize=False`` (GWNMO'): Δ = h∘g. ``grad``/``weights`` are a tensor
    or matching sequences of tensors (all of the target's parameters): norms are taken over the
    whole flattened parameter vector. Both norms are floored at ``eps`` before the square root is
    differentiated, so a zero gradient gives Δ = 0 and a numerically vanishing h∘g gives a finite
    Δ (0 when h∘g underflows to exactly 0) — never NaN or Inf, in values or in gradients.
    """
    single = isinstance(grad, Tensor)
    gs = [grad] if single else list(grad)
    hs = [weights] if single else list(weights)
    if len(gs) != len(hs):
        raise ValueError(f"got {len(gs)} gradients but {len(hs)} weight tensors")
    hg = [h * g for h, g in zip(hs, gs)]
    if normalize:
        g_norm = _sq_norm(gs).clamp_min(eps * eps).sqrt()
        hg_norm = _sq_norm(hg).clamp_min(eps * eps).sqrt()
        scale = g_norm / hg_norm
        hg = [scale * x for x in hg]
    return hg[0] if single else hg


def direction_stats(grads: Sequence[Tensor], h: Sequence[Tensor], delta: Sequence[Tensor]) -> dict[str, Tensor]:
    """Detached diagnostics of one step: mean/std of h, cos(Δ, g), ‖Δ‖/‖g‖ (0-dim tensors, no host sync)."""
    with torch.no_grad():
        hf = torch.cat([x.reshape(-1) for x in h])
        gf = torch.cat([x.reshape(-1) for x in grads])
        df = torch.cat([x.reshape(-1) for x in delta])
        gn, dn = gf.norm(), df.norm()
        return {
            "h_mean": hf.mean(),
            "h_std": hf.std() if hf.numel() > 1 else torch.zeros_like(gn),
            "cos_delta_g": (df @ gf) / (gn * dn).clamp_min(EPS),
            "delta_over_g": dn / gn.clamp_min(EPS),
        }
