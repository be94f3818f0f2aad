"""SGD whose step sizes are meta-learned: per tensor (and per inner step), or per coordinate.

The controls for GWNMO's learned per-layer step length: ``--method sgd --learn-lr tensor-step``
(MAML++'s learned per-layer, per-step step sizes, LSLR) and, for ``--method meta-sgd`` under a
look-ahead schedule, Meta-SGD's per-coordinate step sizes, in higher's differentiable loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import higher
import torch
from higher.optim import DifferentiableOptimizer
from torch import Tensor, nn

from gwnmo_meta.optim.gwnmo import LearnedStepSize


class CoordinateStepSize(nn.Module):
    """Meta-SGD's step sizes: one α per coordinate of every tensor, starting at ``lr`` (learned
    directly, as in ``learn2learn.algorithms.MetaSGD``)."""

    def __init__(self, lr: float, shapes: Sequence[Sequence[int]]):
        super().__init__()
        self.lrs = nn.ParameterList([nn.Parameter(torch.full(tuple(s), float(lr))) for s in shapes])

    def alphas(self, step: int = 0) -> list[Tensor]:
        """α per tensor (same at every step)."""
        return list(self.lrs)

    def named_alphas(self, names: Sequence[str]) -> dict[str, float]:
        """The mean α of each tensor, as logged (``lr/inner/*``)."""
        return {n: float(a.detach().mean()) for n, a in zip(names, self.lrs, strict=True)}


StepSizes = LearnedStepSize | CoordinateStepSize


class ScaledSGD(torch.optim.Optimizer):
    """SGD, φ ← φ − α_t ∘ g, with α_t from a meta-learned ``step_size`` (read by higher's
    differentiable version, :class:`DifferentiableScaledSGD`)."""

    def __init__(self, params: Iterable[Tensor], step_size: StepSizes, lr: float = 0.1):
        super().__init__(params, dict(lr=lr))
        self.step_size = step_size
        self._inner_step = 0

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        alphas = self.step_size.alphas(self._inner_step)
        self._inner_step += 1
        for group in self.param_groups:
            for p, a in zip(group["params"], alphas, strict=True):
                if p.grad is not None:
                    p.sub_(a.detach() * p.grad)
        return loss


class DifferentiableScaledSGD(DifferentiableOptimizer):
    """higher's differentiable :class:`ScaledSGD`: the new φ keeps its graph to the step sizes."""

    def __init__(
        self, other: ScaledSGD, reference_params: Iterable[Tensor], *args: Any, **kwargs: Any
    ):
        super().__init__(other, reference_params, *args, **kwargs)
        self.step_size = other.step_size
        self._inner_step = 0

    def _update(self, grouped_grads: list[list[Tensor | None]], **kwargs: Any) -> None:
        alphas = self.step_size.alphas(self._inner_step)
        self._inner_step += 1
        for group, grads in zip(self.param_groups, grouped_grads, strict=False):
            for i, (p, g) in enumerate(zip(group["params"], grads, strict=False)):
                if g is not None:
                    group["params"][i] = p - alphas[i] * g


higher.register_optim(ScaledSGD, DifferentiableScaledSGD)
