"""Meta-training schedules for learned inner-loop optimizers: thesis Algorithms 1 and 2 on episodes.

An episode has a support set (Xs, ys) and a query set (Xq, yq); the inner loop takes k steps
φ_{t+1} = φ_t − α·Δ_t(θ) on the support loss L_s, starting from φ_0 (the learned or fixed init).

``alg2`` — alternating / look-ahead (Algorithm 2). The thesis judges each step by the loss on the
*next* batch. In an episode the fresh data after the steps is the query set: the meta-loss is
L_q(φ_k), back-propagated through all k differentiable updates to θ (and φ_0 with learn-init).

``alg1`` — same-batch online hypergradient (Algorithm 1). The thesis evaluates L at φ_t on the
current batch, and φ_t depends on θ only through the previous update. In an episode the stream of
batches is the repeated support set: for t = 1..k,

    φ_t = stopgrad(φ_{t−1}) − α·Δ_{t−1}(θ)     (φ_0 itself is kept, so a learned init is trained)
    meta-loss = (1/k) Σ_t L_s(φ_t)

so each term reaches θ through exactly one update (one-step truncation), and no query data
enters the meta-gradient. The query set is only used to report accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import higher
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCHEDULES = ("alg1", "alg2")


@dataclass
class EpisodeOutcome:
    """What one episode gives the trainer: the meta-loss (with its graph when training) and metrics."""

    meta_loss: Optional[Tensor]
    query_loss: float
    query_acc: float
    inner_losses: list[float] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    weights: Optional[Tensor] = None


def query_metrics(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(cross-entropy, accuracy) as 0-dim tensors."""
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


def _detach_all(grads: Any) -> list[Any]:
    return [None if g is None else g.detach() for g in grads]


def _step(diffopt: Any, loss: Tensor, x: Tensor, first_order: bool) -> None:
    """One differentiable step; ``first_order`` treats the gradients as constants (no second derivatives)."""
    kwargs: dict[str, Any] = {"grad_callback": _detach_all} if first_order else {}
    if getattr(diffopt, "weighting_net", None) is not None:
        kwargs["features"] = x
    diffopt.step(loss, **kwargs)


def run_episode(head: nn.Module, opt: torch.optim.Optimizer, ep: Any, *, steps: int, schedule: str, train: bool,
                learn_init: bool, first_order: bool = False) -> EpisodeOutcome:
    """Adapt ``head`` with ``opt`` (through higher) on the support set and score the query set.

    ``train=True`` returns the schedule's meta-loss with its graph to θ (and to the init when
    ``learn_init``); ``train=False`` keeps no meta-graph.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    sx, sy, qx, qy = ep.support_x, ep.support_y, ep.query_x, ep.query_y
    inner: list[Tensor] = []
    stats_acc: dict[str, list[Tensor]] = {}
    meta_terms: list[Tensor] = []
    with higher.innerloop_ctx(head, opt, copy_initial_weights=not (train and learn_init),
                              track_higher_grads=train) as (fmodel, diffopt):
        for t in range(steps):
            if train and schedule == "alg1" and t >= 1:
                meta_terms.append(F.cross_entropy(fmodel(sx), sy))  # L_s(φ_t), through update t−1 only
                fmodel.update_params([p.detach().requires_grad_() for p in fmodel.parameters()])
            loss = F.cross_entropy(fmodel(sx), sy)
            inner.append(loss.detach())
            _step(diffopt, loss, sx, first_order and train)
            for k, v in getattr(diffopt, "last_stats", {}).items():
                stats_acc.setdefault(k, []).append(v)
        if train and schedule == "alg1":
            meta_terms.append(F.cross_entropy(fmodel(sx), sy))
        if train and schedule == "alg2":
            q_loss, q_acc = query_metrics(fmodel(qx), qy)
            meta_loss: Optional[Tensor] = q_loss
        else:
            with torch.no_grad():
                q_loss, q_acc = query_metrics(fmodel(qx), qy)
            meta_loss = torch.stack(meta_terms).mean() if meta_terms else None
        weights = getattr(diffopt, "last_h", None)
    # one host transfer for all the numbers of the episode
    nums = torch.stack([q_loss.detach(), q_acc] + inner + [torch.stack(v).mean() for v in stats_acc.values()]).tolist()
    return EpisodeOutcome(
        meta_loss=meta_loss, query_loss=nums[0], query_acc=nums[1], inner_losses=nums[2 : 2 + len(inner)],
        stats=dict(zip(stats_acc.keys(), nums[2 + len(inner) :])), weights=weights,
    )
