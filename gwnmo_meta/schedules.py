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
enters the meta-gradient. The query set is only used to report accuracy. Since φ_t (t ≥ 1) is
detached, its gradient g_t is a constant for θ; those inner steps are taken first-order, which
gives the same meta-gradient (bit for bit, tested) at lower cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import higher
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gwnmo_meta.registry import SCHEDULES


@dataclass
class EpisodeOutcome:
    """What one episode gives the trainer: the meta-loss (with its graph when training) and metrics."""

    meta_loss: Tensor | None
    query_loss: float
    query_acc: float
    inner_losses: list[float] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    weights: Tensor | None = None
    # query accuracy / loss at the init and after every inner step (filled when not training)
    step_query_acc: list[float] = field(default_factory=list)
    step_query_loss: list[float] = field(default_factory=list)


def task_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per task: 0-dim for one task (logits [B, C]), [T] for a task batch ([T, B, C])."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)


def query_metrics(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(cross-entropy, accuracy): 0-dim tensors for one task, [T] for a task batch."""
    return task_losses(logits, y), (logits.argmax(-1) == y).float().mean(-1)


def _detach_all(grads: Any) -> list[Any]:
    return [None if g is None else g.detach() for g in grads]


def _step(diffopt: Any, loss: Tensor, x: Tensor, first_order: bool) -> None:
    """One differentiable step; ``first_order`` treats the gradients as constants (no second derivatives)."""
    kwargs: dict[str, Any] = {"grad_callback": _detach_all} if first_order else {}
    if getattr(diffopt, "weighting_net", None) is not None:
        kwargs["features"] = x
    diffopt.step(loss, **kwargs)


def run_episode(
    head: nn.Module,
    opt: torch.optim.Optimizer,
    ep: Any,
    *,
    steps: int,
    schedule: str,
    train: bool,
    learn_init: bool,
    first_order: bool = False,
) -> EpisodeOutcome:
    """Adapt ``head`` with ``opt`` (through higher) on the support set and score the query set.

    ``train=True`` returns the schedule's meta-loss with its graph to θ (and to the init when
    ``learn_init``); ``train=False`` keeps no meta-graph.
    """
    _, (outcome,) = _adapt(
        head,
        opt,
        ep,
        steps=steps,
        schedule=schedule,
        train=train,
        learn_init=learn_init,
        first_order=first_order,
    )
    return outcome


def run_episodes(
    head: nn.Module,
    opt: torch.optim.Optimizer,
    batch: Any,
    *,
    steps: int,
    schedule: str,
    train: bool,
    learn_init: bool,
    first_order: bool = False,
) -> tuple[Tensor | None, list[EpisodeOutcome]]:
    """:func:`run_episode` for T tasks at once, in one task-batched inner loop.

    ``batch`` holds T episodes stacked along a leading dimension (``stack_episodes``). All tasks
    start from the same init, each adapts on its own support set with its own fast weights
    ([T, ...]: the init expanded), and every optimizer statistic that spans coordinates (GWNMO's
    norms, M's per-tensor scales and task context) is per task — so each task follows the same
    maths as alone, in one pass of batched tensor ops instead of T passes of small ones. The step
    loss is the sum of the tasks' losses, whose gradient with respect to task t's fast weights is
    task t's own gradient. Returns the mean of the tasks' meta-losses (``None`` unless
    ``train``) and one :class:`EpisodeOutcome` per task.
    """
    if batch.support_x.dim() != 3:
        raise ValueError(
            "run_episodes needs stacked episodes (support_x [T, n, D]); use run_episode for one"
        )
    return _adapt(
        head,
        opt,
        batch,
        steps=steps,
        schedule=schedule,
        train=train,
        learn_init=learn_init,
        first_order=first_order,
    )


def _adapt(
    head: nn.Module,
    opt: torch.optim.Optimizer,
    ep: Any,
    *,
    steps: int,
    schedule: str,
    train: bool,
    learn_init: bool,
    first_order: bool,
) -> tuple[Tensor | None, list[EpisodeOutcome]]:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    sx, sy, qx, qy = ep.support_x, ep.support_y, ep.query_x, ep.query_y
    batched = sx.dim() == 3
    inner: list[Tensor] = []
    meta_terms: list[Tensor] = []
    curve: list[tuple[Tensor, Tensor]] = []  # evaluation only: query (loss, acc) at φ_0..φ_{k−1}
    with higher.innerloop_ctx(
        head, opt, copy_initial_weights=not (train and learn_init), track_higher_grads=train
    ) as (fmodel, diffopt):
        if batched:  # every task starts from the (shared) init
            fmodel.update_params([p.expand(sx.shape[0], *p.shape) for p in fmodel.parameters()])
        for t in range(steps):
            if train and schedule == "alg1" and t >= 1:
                meta_terms.append(task_losses(fmodel(sx), sy))  # L_s(φ_t), through update t−1 only
                fmodel.update_params([p.detach().requires_grad_() for p in fmodel.parameters()])
            if not train:
                with torch.no_grad():
                    curve.append(query_metrics(fmodel(qx), qy))
            losses = task_losses(fmodel(sx), sy)
            inner.append(losses.detach())
            # alg1, t ≥ 1: g_t is taken at the detached φ_t, so no path from it reaches θ — a
            # first-order step gives the same meta-gradient, bit for bit, without building and
            # traversing a second-order graph into a discarded leaf.
            constant_grads = first_order or (schedule == "alg1" and t >= 1)
            _step(diffopt, losses.sum() if batched else losses, sx, constant_grads and train)
        if train and schedule == "alg1":
            meta_terms.append(task_losses(fmodel(sx), sy))
        if train and schedule == "alg2":
            q_loss, q_acc = query_metrics(fmodel(qx), qy)
            meta: Tensor | None = q_loss
        else:
            with torch.no_grad():
                q_loss, q_acc = query_metrics(fmodel(qx), qy)
            meta = torch.stack(meta_terms).mean(0) if meta_terms else None
        weights = getattr(diffopt, "last_h", None)
        stats = diffopt.step_stats() if hasattr(diffopt, "step_stats") else {}
    if curve:  # the last entry is the final query metrics themselves (φ_k)
        curve.append((q_loss.detach(), q_acc))
    # one host transfer for all the numbers of the episode(s): rows = quantities, columns = tasks
    rows = [q_loss.detach(), q_acc] + inner + list(stats.values())
    rows += [c[1] for c in curve] + [c[0] for c in curve]
    table = torch.stack(rows).reshape(len(rows), -1).t().tolist()
    n_inner, n_stats, n_curve = len(inner), len(stats), len(curve)
    c0 = 2 + n_inner + n_stats
    outcomes = [
        EpisodeOutcome(
            meta_loss=None if meta is None else (meta[i] if batched else meta),
            query_loss=nums[0],
            query_acc=nums[1],
            inner_losses=nums[2 : 2 + n_inner],
            stats=dict(zip(stats.keys(), nums[2 + n_inner : c0], strict=True)),
            weights=None if weights is None else (weights[i] if batched else weights),
            step_query_acc=nums[c0 : c0 + n_curve],
            step_query_loss=nums[c0 + n_curve :],
        )
        for i, nums in enumerate(table)
    ]
    return (meta.mean() if batched and meta is not None else meta), outcomes
