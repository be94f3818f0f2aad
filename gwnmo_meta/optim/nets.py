"""Target heads and the weighting networks M of GWNMO.

A weighting network maps ``(features [B, D], params, grads)`` to raw outputs shaped like
``params`` (GWNMO applies the sigmoid; GWNMO' uses them as they are). For a task-batched inner
loop ``features`` is [T, B, D] and every param/grad has a leading task dimension T; each task is
then weighted exactly as it would be alone.

* :class:`ThesisMLPWeighting` — the thesis's M: three linear layers over the concatenation
  [mean over the batch of E(X), flattened φ, flattened ∇φ]; one output per target parameter.
  Its size grows with the target (input 2P + D, output P).
* :class:`CoordinateWeighting` — a small MLP shared by every coordinate: per-coordinate inputs
  (g and φ scaled by their tensor's RMS, |g|/RMS, log-magnitude of g, the log-scale of the input
  feature a weight reads (first layer only), is-bias flag, depth of the tensor in the target)
  plus a task context (a projection of the batch-mean features). The target's first weight
  matrix (in parameter order) is the one that reads the input features. Its size does not depend on
  the target's size, so it scales to targets the thesis MLP cannot hold.
* :class:`~gwnmo_meta.optim.factored.FactoredWeighting` — one MLP evaluation per output unit (row) of
  each tensor, shared by the row's coordinates: M's cost is O(rows), not O(rows · columns), which
  keeps GWNMO within 2× of MAML on large targets (conv4 end to end, wide heads).

Each takes ``state_inputs`` (default 0): with a base direction other than the gradient
(:class:`~gwnmo_meta.optim.direction.Base`), M also reads that many per-coordinate state tensors
of the base optimizer (``M(features, params, grads, state=[...])``: momentum's buffer, or Adam's m̂
and √v̂), after its usual inputs; with 0 its inputs and parameters are exactly those above.

Both start near plain gradient descent: the last layer is initialised to output ``init`` (0 for
GWNMO → h ≈ 0.5 everywhere → Δ ≈ g after normalisation; 1 for GWNMO' → Δ ≈ g).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.memory import available_bytes, human
from gwnmo_meta.optim.factored import FactoredWeighting, check_state
from gwnmo_meta.registry import WEIGHTINGS


class TaskLinear(nn.Linear):
    """``nn.Linear`` that also takes task-batched weights.

    With its own ``[out, in]`` weight it is exactly ``nn.Linear``. Inside a task-batched inner loop
    higher hands it fast weights ``[T, out, in]`` / ``[T, out]`` and inputs ``[T, B, in]``: task t's
    inputs meet task t's weights (one batched matmul for all tasks).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 2:
            return super().forward(x)
        # (W·xᵀ)ᵀ rather than x·Wᵀ: the weight's gradient (dYᵀ·x) then comes out contiguous
        return torch.baddbmm(self.bias.unsqueeze(-1), self.weight, x.transpose(-1, -2)).transpose(
            -1, -2
        )


def make_head(feature_dim: int, ways: int, hidden: int | None = None) -> nn.Module:
    """The target T: a linear classifier, or two linear layers with a ReLU between (thesis)."""
    if hidden is None:
        return TaskLinear(feature_dim, ways)
    return nn.Sequential(TaskLinear(feature_dim, hidden), nn.ReLU(), TaskLinear(hidden, ways))


def split_like(flat: Tensor, shapes: Sequence[torch.Size]) -> list[Tensor]:
    """Split the last dimension of ``flat`` into views shaped ``shapes`` (leading dimensions kept)."""
    lead = flat.shape[:-1]
    out, i = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(flat[..., i : i + n].view(*lead, *s))
        i += n
    return out


def _task_shapes(
    features: Tensor, params: Sequence[Tensor]
) -> tuple[tuple[int, ...], list[torch.Size]]:
    """(leading task dims, per-task parameter shapes): ``features`` is [B, D], or [T, B, D] with params [T, ...]."""
    lead = tuple(features.shape[:-2])
    return lead, [p.shape[len(lead) :] for p in params]


def _init_last(layer: nn.Linear, init: float) -> None:
    nn.init.normal_(layer.weight, std=1e-3)
    nn.init.constant_(layer.bias, init)


def rms_scaled(xs: Sequence[Tensor], lead: tuple[int, ...]) -> Tensor:
    """The tensors flattened and concatenated ([..., P]), each divided by its own (per-task) RMS."""
    flat = [x.reshape(*lead, -1) for x in xs]
    return torch.cat([f / f.pow(2).mean(-1, keepdim=True).add(1e-16).sqrt() for f in flat], -1)


class ThesisMLPWeighting(nn.Module):
    """M(θ; [pool(E(X)), φ, ∇φ]) with three linear layers (thesis §4.3)."""

    def __init__(
        self,
        feature_dim: int,
        param_shapes: Sequence[Sequence[int]],
        hidden: int = 32,
        init: float = 0.0,
        state_inputs: int = 0,
    ):
        super().__init__()
        self.shapes = [torch.Size(s) for s in param_shapes]
        self.num_params = sum(math.prod(s) for s in self.shapes)
        self.state_inputs = state_inputs
        self.net = nn.Sequential(
            nn.Linear(feature_dim + (2 + state_inputs) * self.num_params, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            last := nn.Linear(hidden, self.num_params),
        )
        _init_last(last, init)

    @staticmethod
    def parameter_count(
        feature_dim: int, num_params: int, hidden: int, state_inputs: int = 0
    ) -> int:
        return (
            (feature_dim + (2 + state_inputs) * num_params + 1) * hidden
            + (hidden + 1) * hidden
            + (hidden + 1) * num_params
        )

    def forward_flat(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: Sequence[Sequence[Tensor]] | None = None,
    ) -> Tensor:
        """Raw outputs for the whole target as one [..., P] tensor."""
        lead, _ = _task_shapes(features, params)
        pooled = features.mean(-2)  # the batch's features, averaged over examples
        extra = [s.reshape(*lead, -1) for xs in check_state(self, state) for s in xs]
        x = torch.cat(
            [pooled]
            + [p.reshape(*lead, -1) for p in params]
            + [g.reshape(*lead, -1) for g in grads]
            + extra,
            -1,
        )
        return self.net(x)

    def forward(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: Sequence[Sequence[Tensor]] | None = None,
    ) -> list[Tensor]:
        return split_like(self.forward_flat(features, params, grads, state), self.shapes)


class _FusedTrunk(torch.autograd.Function):
    """M's per-coordinate MLP over a task batch, with a hand-written (first-order) backward.

    out = relu(relu(x·W1ᵀ + c)·W2ᵀ + b2)·W3ᵀ + b3 for x [T, P, k] and a per-task first-layer
    term c [T, 1, H] (bias + task context). Same maths as the autograd version; it fuses c into
    the first GEMM, applies the ReLUs in place and orders the weight-gradient GEMMs for speed,
    which matters because this trunk is most of a task-batched GWNMO step on CPU.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, c: Tensor, w1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor
    ) -> Tensor:
        tasks, coords, _ = x.shape
        h1 = torch.baddbmm(c, x, w1.t().expand(tasks, -1, -1)).relu_().view(tasks * coords, -1)
        h2 = torch.addmm(b2, h1, w2.t()).relu_()
        ctx.save_for_backward(x, h1, h2, w1, w2, w3)
        return torch.addmm(b3, h2, w3.t()).view(tasks, coords)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        x, h1, h2, w1, w2, w3 = ctx.saved_tensors
        tasks, coords, k = x.shape
        d = dout.reshape(tasks * coords, 1)
        gw3, gb3 = d.t() @ h2, d.sum(0)
        d2 = d * w3
        torch.ops.aten.threshold_backward.grad_input(d2, h2, 0, grad_input=d2)
        gw2, gb2 = (h1.t() @ d2).t(), d2.sum(0)
        d1 = d2 @ w2
        torch.ops.aten.threshold_backward.grad_input(d1, h1, 0, grad_input=d1)
        gw1 = (x.reshape(tasks * coords, k).t() @ d1).t()
        d1 = d1.view(tasks, coords, -1)
        dx = d1 @ w1 if ctx.needs_input_grad[0] else None
        return dx, d1.sum(1, keepdim=True), gw1, gw2, gb2, gw3, gb3


class CoordinateWeighting(nn.Module):
    """A per-coordinate MLP shared by all of the target's parameters (size independent of the target)."""

    coord_inputs = 7

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
        self.coord_inputs = CoordinateWeighting.coord_inputs + state_inputs
        self.context = nn.Linear(feature_dim, context)
        self.inp = nn.Linear(self.coord_inputs + context, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        _init_last(self.out, init)

    def _layout(
        self,
        shapes: Sequence[torch.Size],
        feature_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-coordinate constants of a target layout, cached.

        (segment of each entry of [g-tensors…, φ-tensors…] flattened, those segments' sizes,
        [is-bias, depth] per coordinate, feature column read by each coordinate or −1).
        """
        key = (tuple(shapes), feature_dim, device, dtype)
        if getattr(self, "_layout_key", None) != key:
            dev, dt = device, dtype
            n = len(shapes)
            sizes = [math.prod(s) for s in shapes]
            seg = torch.repeat_interleave(
                torch.arange(n, device=dev), torch.tensor(sizes, device=dev)
            )
            seg = torch.cat([seg, seg + n])
            depth_den = max(1, n - 1)
            const = torch.tensor(
                [[1.0 if len(s) == 1 else 0.0, i / depth_den] for i, s in enumerate(shapes)],
                device=dev,
                dtype=dt,
            )
            # which feature column each first-layer weight reads (-1: not a first-layer weight).
            # Only the target's first weight matrix reads the input features: a later layer
            # whose width happens to equal the feature dimension reads hidden units instead.
            first = next((i for i, s in enumerate(shapes) if len(s) == 2), None)
            cols = [
                torch.arange(feature_dim, device=dev).repeat(s[0])
                if i == first and s[1] == feature_dim
                else torch.full((k,), -1, device=dev)
                for i, (s, k) in enumerate(zip(shapes, sizes, strict=True))
            ]
            col = torch.cat(cols)
            self._layout_key = key
            self._layout_val = (
                seg,
                torch.tensor(sizes + sizes, device=dev, dtype=dt),
                const[seg[: col.shape[0]]],
                col,
            )
        return self._layout_val

    def _column_scale(self, features: Tensor, col: Tensor) -> Tensor:
        """Per coordinate: log-RMS of the feature column it reads relative to the mean column (0 if none).

        Depends on the features only, so it is computed once per support set: the inner loop
        passes the same features tensor at every step.
        """
        cached = getattr(self, "_scale_cache", None)
        if (
            cached is not None
            and cached[0] is features
            and cached[1] == features._version
            and cached[2] is col
        ):
            return cached[3]
        col_rms = features.pow(2).mean(-2).add(1e-16).sqrt()
        col_scale = torch.log(col_rms / col_rms.mean(-1, keepdim=True))
        scale = torch.where(
            col >= 0,
            col_scale[..., col.clamp_min(0)],
            torch.zeros((), dtype=features.dtype, device=features.device),
        )
        if not features.requires_grad:
            self._scale_cache = (features, features._version, col, scale)
        return scale

    def _coord_features(
        self, features: Tensor, params: Sequence[Tensor], grads: Sequence[Tensor]
    ) -> Tensor:
        lead, shapes = _task_shapes(features, params)
        seg, sizes, const, col = self._layout(
            shapes, features.shape[-1], params[0].device, params[0].dtype
        )
        # g and φ side by side, each scaled by its tensor's (per-task) RMS
        gp = torch.cat([x.reshape(*lead, -1) for x in list(grads) + list(params)], -1)
        if (
            lead
        ):  # segments are contiguous: sum and broadcast them through views (no scatter/gather)
            counts = [math.prod(s) for s in shapes] * 2
            sums = torch.stack([part.pow(2).sum(-1) for part in gp.split(counts, -1)], -1)
            rms = (sums / sizes).add_(1e-16).sqrt_()
            gpn = gp / torch.cat(
                [rms[..., i : i + 1].expand(*lead, c) for i, c in enumerate(counts)], -1
            )
        else:  # one task: the recorded benchmark results were computed with this op sequence
            # out-of-place index_add (same kernel as index_add_ on a fresh zero tensor, so the
            # same numbers) keeps M usable under torch.func.vmap / grad
            zeros = torch.zeros(sizes.shape, device=gp.device, dtype=gp.dtype)
            rms = (zeros.index_add(0, seg, gp * gp) / sizes).add(1e-16).sqrt()
            gpn = gp / rms[seg]
        num = col.shape[0]
        g, gn, pn = gp[..., :num], gpn[..., :num], gpn[..., num:]
        scale = self._column_scale(features, col).expand_as(gn)
        columns = [gn, pn, gn.abs(), scale, torch.log(g.abs() + 1e-8) / 10.0]
        return torch.cat(
            [c.unsqueeze(-1) for c in columns] + [const.expand(*lead, *const.shape)], -1
        )

    def forward(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: Sequence[Sequence[Tensor]] | None = None,
    ) -> list[Tensor]:
        return split_like(
            self.forward_flat(features, params, grads, state), _task_shapes(features, params)[1]
        )

    def forward_flat(
        self,
        features: Tensor,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: Sequence[Sequence[Tensor]] | None = None,
    ) -> Tensor:
        """Raw outputs for the whole target as one [..., P] tensor.

        ``state``: the base's state tensors (``state_inputs`` lists aligned with ``params``); each
        is one more per-coordinate input, scaled by its tensor's RMS like g and φ.
        """
        lead, _ = _task_shapes(features, params)
        ctx = torch.tanh(self.context(features.mean(-2)))  # task summary of the batch
        x = self._coord_features(features, params, grads)
        extra = [rms_scaled(xs, lead).unsqueeze(-1) for xs in check_state(self, state)]
        if extra:
            x = torch.cat([x, *extra], -1)
        w_coord, w_ctx = (
            self.inp.weight[:, : self.coord_inputs],
            self.inp.weight[:, self.coord_inputs :],
        )
        if lead:  # task batch: one context row per task, broadcast over that task's coordinates
            ctx_term = (ctx @ w_ctx.t() + self.inp.bias).unsqueeze(-2)
            return _FusedTrunk.apply(
                x, ctx_term, w_coord, self.mid.weight, self.mid.bias, self.out.weight, self.out.bias
            )
        hidden = torch.relu(x @ w_coord.t() + (w_ctx @ ctx + self.inp.bias))
        hidden = torch.relu(self.mid(hidden))
        return self.out(hidden).reshape(-1)


def build_weighting(
    kind: str,
    feature_dim: int,
    param_shapes: Sequence[Sequence[int]],
    *,
    hidden: int = 32,
    prime: bool = False,
    state_inputs: int = 0,
) -> nn.Module:
    """M for ``kind`` (a registered weighting); ``prime`` (GWNMO') starts at output 1 instead of 0.

    Args:
        kind: ``coordinate`` (one MLP shared by all coordinates), ``factored`` (one MLP shared
            by all rows, :mod:`gwnmo_meta.optim.factored`) or ``mlp`` (the thesis MLP).
        feature_dim: width of the batch features M reads.
        param_shapes: the target's parameter shapes (sizes the thesis MLP; unused otherwise).
        hidden: M's hidden width.
        prime: initialise for GWNMO' (raw weights ≈ 1) instead of GWNMO (sigmoid(0) = 0.5).
        state_inputs: per-coordinate state tensors of the base direction M also reads
            (``Base.state_inputs``: 0 for the gradient, 1 for momentum, 2 for Adam).

    Returns:
        The weighting network, called as ``M(features, params, grads)`` → raw weights.

    The thesis MLP is refused with a ``ConfigError`` when its weights and Adam state would exceed
    the free memory (its size grows with the target; use ``coordinate`` then).
    """
    init = 1.0 if prime else 0.0
    if kind == "coordinate":
        return CoordinateWeighting(feature_dim, hidden=hidden, init=init, state_inputs=state_inputs)
    if kind == "factored":
        return FactoredWeighting(feature_dim, hidden=hidden, init=init, state_inputs=state_inputs)
    if kind == "mlp":
        num = sum(math.prod(s) for s in param_shapes)
        count = ThesisMLPWeighting.parameter_count(feature_dim, num, hidden, state_inputs)
        need = count * 4 * 4  # weights, grads, Adam's two moments, fp32
        free = available_bytes(torch.device("cpu"))  # M is built on the CPU
        if free is not None and need > free:
            raise ConfigError(
                f"the thesis MLP weighting for a {num:,}-parameter target needs {count:,} weights "
                f"({human(need)} with gradients and Adam state, more than the {human(free)} "
                "free); use --weighting coordinate"
            )
        return ThesisMLPWeighting(
            feature_dim, param_shapes, hidden=hidden, init=init, state_inputs=state_inputs
        )
    raise ConfigError(f"unknown weighting {kind!r}; choose one of {', '.join(WEIGHTINGS)}")
