"""Reference classifiers that need no meta-learning: ``prototype`` and ``logreg``.

They score the same episodes on the same cached features as every other method, so they tell
whether a meta-learned optimizer adds anything to what the support set alone gives.

* ``prototype`` — nearest class centroid (SimpleShot): each class's centroid is the mean of its
  support features; a query goes to the centroid at the smallest **Euclidean** distance. The
  features are unit-norm, so this is the linear rule ``argmax_c 2·x·c − ‖c‖²`` (cosine to the
  centroid would drop the ‖c‖² term). Its query loss is the cross-entropy of
  ``softmax(−‖x − c‖²)`` (ProtoNet's probabilities), reported for completeness only.
* ``logreg`` — multinomial logistic regression on the support set, trained to convergence:
  ``mean CE(W x + b, y) + (λ/2)·‖W‖²`` (``λ`` = ``logreg_l2``; the bias is not penalised) is
  strictly convex in W, so its minimiser is unique; ``torch.optim.LBFGS`` with a strong-Wolfe
  line search from W = 0, b = 0, in float64, until every gradient entry is below 1e-6, reaches it
  (tested against Newton's method). Without the
  penalty a separable support set (always, in 1-shot) has no finite minimiser.

Both are pure functions of tensors with optional leading task dimensions, plus a thin
:class:`ReferenceMethod` wrapper implementing the :class:`~gwnmo_meta.training.methods.MetaMethod`
interface (nothing meta-learned; ``train=True`` gives no meta-loss). Per-step curves have one
entry: there are no inner steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gwnmo_meta.tasks.episodes import Episode, stack_episodes
from gwnmo_meta.training.inner_loops import EpisodeOutcome, query_metrics
from gwnmo_meta.training.methods import MetaMethod, MethodConfig

LBFGS_MAX_ITER = 500
LBFGS_TOLERANCE_GRAD = 1e-6


def class_centroids(x: Tensor, y: Tensor, ways: int) -> Tensor:
    """Mean feature of each class: x [..., n, D], y [..., n] (0..ways−1) → [..., ways, D]."""
    onehot = F.one_hot(y, ways).to(x.dtype)  # [..., n, ways]
    sums = onehot.transpose(-1, -2) @ x
    return sums / onehot.sum(-2).clamp_min(1).unsqueeze(-1)


def prototype_logits(support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
    """Negative squared Euclidean distances of the queries to the support centroids.

    Args:
        support_x: support features [..., n, D].
        support_y: support labels [..., n] in 0..ways−1.
        query_x: query features [..., q, D].
        ways: number of classes N.

    Returns:
        Logits [..., q, N]; their argmax is the nearest centroid.
    """
    c = class_centroids(support_x, support_y, ways)
    sq = (query_x * query_x).sum(-1, keepdim=True)  # [..., q, 1]
    return -(sq - 2 * query_x @ c.transpose(-1, -2) + (c * c).sum(-1).unsqueeze(-2))


def logreg_objective(w: Tensor, b: Tensor, x: Tensor, y: Tensor, l2: float) -> Tensor:
    """Sum over tasks of ``mean CE(x wᵀ + b, y) + (l2/2)‖w‖²`` (w [..., N, D], b [..., N])."""
    logits = x @ w.transpose(-1, -2) + b.unsqueeze(-2)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    per_task = ce.view(y.shape).mean(-1)
    return per_task.sum() + 0.5 * l2 * (w * w).sum()


def fit_logreg(
    x: Tensor,
    y: Tensor,
    ways: int,
    l2: float,
    *,
    max_iter: int = LBFGS_MAX_ITER,
    tolerance_grad: float = LBFGS_TOLERANCE_GRAD,
) -> tuple[Tensor, Tensor]:
    """L2-penalised multinomial logistic regression fitted to convergence with L-BFGS.

    Tasks stacked along leading dimensions are independent problems; their objectives are summed,
    so the joint minimiser is every task's own minimiser.

    Args:
        x: features [..., n, D].
        y: labels [..., n] in 0..ways−1.
        ways: number of classes N.
        l2: penalty λ > 0 on the weights.
        max_iter: L-BFGS iteration cap.
        tolerance_grad: stop when every gradient entry is below this in absolute value.

    Returns:
        (w [..., N, D], b [..., N]), detached, in ``x``'s dtype (solved in float64).
    """
    if l2 <= 0:
        raise ValueError(f"logreg needs a positive L2 penalty, got {l2}")
    lead, dtype = x.shape[:-2], x.dtype
    x, y = x.detach().double(), y.detach()  # float32 rounding stalls the line search before 1e-6
    w = torch.zeros(*lead, ways, x.shape[-1], dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(*lead, ways, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tolerance_grad,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = logreg_objective(w, b, x, y, l2)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().to(dtype), b.detach().to(dtype)


class ReferenceMethod(MetaMethod):
    """A reference classifier behind the :class:`MetaMethod` interface (nothing meta-learned).

    Subclasses give the query logits (:meth:`_logits`); the registry names the subclass
    (``MethodInfo.impl``).
    """

    def __init__(self, cfg: MethodConfig, feature_dim: int, ways: int):
        super().__init__(cfg)
        self.ways = ways

    @property
    def task_batched(self) -> bool:
        return True

    def _logits(self, ep: Episode) -> Tensor:
        raise NotImplementedError

    def episode(self, ep: Episode, train: bool) -> EpisodeOutcome:
        return self.episodes([ep], train)[1][0]

    def episodes(
        self, eps: Sequence[Episode], train: bool
    ) -> tuple[Tensor | None, list[EpisodeOutcome]]:
        batch = stack_episodes(eps)
        with torch.no_grad():
            loss, acc = query_metrics(self._logits(batch), batch.query_y)
        outcomes = [
            EpisodeOutcome(
                meta_loss=None,
                query_loss=lo,
                query_acc=ac,
                step_query_acc=[ac],
                step_query_loss=[lo],
            )
            for lo, ac in zip(loss.tolist(), acc.tolist(), strict=True)
        ]
        return None, outcomes


class PrototypeMethod(ReferenceMethod):
    """``prototype``: nearest support-class centroid (:func:`prototype_logits`)."""

    def _logits(self, ep: Episode) -> Tensor:
        return prototype_logits(ep.support_x, ep.support_y, ep.query_x, self.ways)


class LogRegMethod(ReferenceMethod):
    """``logreg``: L2-penalised logistic regression fitted on the support set (:func:`fit_logreg`)."""

    def _logits(self, ep: Episode) -> Tensor:
        w, b = fit_logreg(ep.support_x, ep.support_y, self.ways, self.cfg.logreg_l2)
        return ep.query_x @ w.transpose(-1, -2) + b.unsqueeze(-2)
