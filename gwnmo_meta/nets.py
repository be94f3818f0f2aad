"""Target heads and the weighting networks M of GWNMO.

A weighting network maps ``(features [B, D], params, grads)`` to raw outputs shaped like
``params`` (GWNMO applies the sigmoid; GWNMO' uses them as they are).

* :class:`ThesisMLPWeighting` — the thesis's M: three linear layers over the concatenation
  [mean over the batch of E(X), flattened φ, flattened ∇φ]; one output per target parameter.
  Its size grows with the target (input 2P + D, output P).
* :class:`CoordinateWeighting` — a small MLP shared by every coordinate: per-coordinate inputs
  (g and φ scaled by their tensor's RMS, |g|/RMS, log-magnitude of g, the log-scale of the input
  feature a weight reads (first layer only), is-bias flag, depth of the tensor in the target) plus a task context (a projection of the batch-mean features). Its size
  does not depend on the target's size, so it scales to targets the thesis MLP cannot hold.

Both start near plain gradient descent: the last layer is initialised to output ``init`` (0 for
GWNMO → h ≈ 0.5 everywhere → Δ ≈ g after normalisation; 1 for GWNMO' → Δ ≈ g).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from gwnmo_meta.errors import ConfigError

WEIGHTINGS = ("mlp", "coordinate")
MLP_MEMORY_LIMIT_BYTES = 24 * 1024**3  # this project's machines: refuse a thesis MLP whose training state exceeds it


def make_head(feature_dim: int, ways: int, hidden: Optional[int] = None) -> nn.Module:
    """The target T: a linear classifier, or two linear layers with a ReLU between (thesis)."""
    if hidden is None:
        return nn.Linear(feature_dim, ways)
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, ways))


def _split_like(flat: Tensor, shapes: Sequence[torch.Size]) -> list[Tensor]:
    out, i = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(flat[i : i + n].view(s))
        i += n
    return out


def _init_last(layer: nn.Linear, init: float) -> None:
    nn.init.normal_(layer.weight, std=1e-3)
    nn.init.constant_(layer.bias, init)


class ThesisMLPWeighting(nn.Module):
    """M(θ; [pool(E(X)), φ, ∇φ]) with three linear layers (thesis §4.3)."""

    def __init__(self, feature_dim: int, param_shapes: Sequence[Sequence[int]], hidden: int = 32, init: float = 0.0):
        super().__init__()
        self.shapes = [torch.Size(s) for s in param_shapes]
        self.num_params = sum(math.prod(s) for s in self.shapes)
        self.net = nn.Sequential(
            nn.Linear(feature_dim + 2 * self.num_params, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, self.num_params),
        )
        _init_last(self.net[-1], init)

    @staticmethod
    def parameter_count(feature_dim: int, num_params: int, hidden: int) -> int:
        return (feature_dim + 2 * num_params + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * num_params

    def forward(self, features: Tensor, params: Sequence[Tensor], grads: Sequence[Tensor]) -> list[Tensor]:
        pooled = features.mean(0)  # the batch's features, averaged over examples
        x = torch.cat([pooled] + [p.reshape(-1) for p in params] + [g.reshape(-1) for g in grads])
        return _split_like(self.net(x), self.shapes)


class CoordinateWeighting(nn.Module):
    """A per-coordinate MLP shared by all of the target's parameters (size independent of the target)."""

    coord_inputs = 7

    def __init__(self, feature_dim: int, hidden: int = 32, context: int = 8, init: float = 0.0):
        super().__init__()
        self.context = nn.Linear(feature_dim, context)
        self.inp = nn.Linear(self.coord_inputs + context, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        _init_last(self.out, init)

    def _layout(self, params: Sequence[Tensor], feature_dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-coordinate constants of a target layout, cached: tensor index, counts, [is-bias, depth], feature column."""
        key = (tuple(p.shape for p in params), feature_dim, params[0].device, params[0].dtype)
        if getattr(self, "_layout_key", None) != key:
            dev, dt = params[0].device, params[0].dtype
            sizes = [p.numel() for p in params]
            seg = torch.repeat_interleave(torch.arange(len(params), device=dev), torch.tensor(sizes, device=dev))
            depth_den = max(1, len(params) - 1)
            const = torch.tensor([[1.0 if p.dim() == 1 else 0.0, i / depth_den] for i, p in enumerate(params)], device=dev, dtype=dt)
            # which feature column each first-layer weight reads (-1: not a first-layer weight)
            cols = [torch.arange(feature_dim, device=dev).repeat(p.shape[0]) if p.dim() == 2 and p.shape[1] == feature_dim
                    else torch.full((p.numel(),), -1, device=dev) for p in params]
            col = torch.cat(cols)
            self._layout_key = key
            self._layout_val = (seg, torch.tensor(sizes, device=dev, dtype=dt), const[seg], col)
        return self._layout_val

    def _coord_features(self, features: Tensor, params: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
        seg, sizes, const, col = self._layout(params, features.shape[1])
        g = torch.cat([x.reshape(-1) for x in grads])
        p = torch.cat([x.reshape(-1) for x in params])
        n = len(sizes)
        g_rms = (torch.zeros(n, device=g.device, dtype=g.dtype).index_add_(0, seg, g * g) / sizes).add(1e-16).sqrt()
        p_rms = (torch.zeros(n, device=g.device, dtype=g.dtype).index_add_(0, seg, p * p) / sizes).add(1e-16).sqrt()
        gn = g / g_rms[seg]
        pn = p / p_rms[seg]
        # Input-feature scale: for weights that read the features directly (shape [out, D]), the
        # log-RMS of their input column relative to the average column; 0 elsewhere.
        col_rms = features.pow(2).mean(0).add(1e-16).sqrt()
        col_scale = torch.log(col_rms / col_rms.mean())
        scale = torch.where(col >= 0, col_scale[col.clamp_min(0)], torch.zeros_like(gn))
        return torch.cat([torch.stack([gn, pn, gn.abs(), scale, torch.log(g.abs() + 1e-8) / 10.0], 1), const], 1)

    def forward(self, features: Tensor, params: Sequence[Tensor], grads: Sequence[Tensor]) -> list[Tensor]:
        ctx = torch.tanh(self.context(features.mean(0)))  # task summary of the batch
        x = self._coord_features(features, params, grads)
        w_coord, w_ctx = self.inp.weight[:, : self.coord_inputs], self.inp.weight[:, self.coord_inputs :]
        hidden = torch.relu(x @ w_coord.t() + (w_ctx @ ctx + self.inp.bias))
        hidden = torch.relu(self.mid(hidden))
        return _split_like(self.out(hidden).reshape(-1), [p.shape for p in params])


def build_weighting(kind: str, feature_dim: int, param_shapes: Sequence[Sequence[int]], *, hidden: int = 32,
                    prime: bool = False) -> nn.Module:
    """M for ``kind`` in {mlp, coordinate}; ``prime`` (GWNMO') starts at output 1 instead of 0.

    The thesis MLP is refused with a ``ConfigError`` when its weights and Adam state would exceed
    ``MLP_MEMORY_LIMIT_BYTES`` (its size grows with the target; use ``coordinate`` then).
    """
    init = 1.0 if prime else 0.0
    if kind == "coordinate":
        return CoordinateWeighting(feature_dim, hidden=hidden, init=init)
    if kind == "mlp":
        num = sum(math.prod(s) for s in param_shapes)
        count = ThesisMLPWeighting.parameter_count(feature_dim, num, hidden)
        need = count * 4 * 4  # weights, grads, Adam's two moments, fp32
        if need > MLP_MEMORY_LIMIT_BYTES:
            raise ConfigError(
                f"the thesis MLP weighting for a {num:,}-parameter target needs {count:,} weights "
                f"(~{need / 1024**3:.1f} GiB with gradients and Adam state); use --weighting coordinate"
            )
        return ThesisMLPWeighting(feature_dim, param_shapes, hidden=hidden, init=init)
    raise ConfigError(f"unknown weighting {kind!r}; choose one of {', '.join(WEIGHTINGS)}")
