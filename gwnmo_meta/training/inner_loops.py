"""Meta-training schedules for learned inner-loop optimizers: thesis Algorithms 1 and 2 on episodes.

An episode has a support set (Xs, ys) and a query set (Xq, yq); the inner loop takes k steps
φ_{t+1} = φ_t − α·Δ_t(θ) starting from φ_0 (the learned or fixed init). Step t is computed on the
batch X_t of the episode's stream: the whole support set at every step, or with ``inner_batch`` the
class-balanced mini-batches of the support set (:func:`inner_batch_rows`, consecutive ones
disjoint).

``alg1`` / ``alg2`` — the thesis's one-step look-ahead. The update computed on X_t is judged by
the loss, right after that one update, on data it was not computed from: the next mini-batch
X_{t+1}, or the query set for the last step (for every step without ``inner_batch``, when all
steps use the whole support set). For t = 0..k−1,

    φ_t'    = φ_0 + stopgrad(φ_t − φ_0)       (θ reaches φ_t' through no earlier update;
                                                 a learned init gets ∂φ_t'/∂φ_0 = I; a stateful
                                                 inner optimizer's state is cut likewise)
    meta-loss = (1/k) Σ_t L(φ_t' − α·Δ_t(θ, φ_t'); judge_t)

(one-step truncation, averaged over the inner steps). With ``judge_queries`` = Q, a judge that is
the query set is replaced by a fresh class-balanced random subset of it, Q examples per class,
drawn at every inner step from the episode's ``judge_seed`` (:func:`judge_rows`): an unbiased
estimate of the same meta-loss and meta-gradient, at Q/query of the judge's cost.

Within an episode θ is fixed, so alg1 and alg2 give the same meta-loss; they differ in when the
meta-gradient lands (docs/ALGORITHMS.md): alg2 steps θ before the next meta-batch is adapted, alg1
one meta-step later (``optim.DelayedMetaOptimizer``), as Algorithm 1 moves θ one step late.

``unrolled`` — the k-step unrolled query loss (MAML's objective): L_q(φ_k), back-propagated
through all k differentiable updates to θ (and φ_0 with learn-init).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import higher
import torch
import torch.nn.functional as F
from higher.optim import DifferentiableOptimizer
from torch import Tensor, nn

from gwnmo_meta.registry import SCHEDULES

if TYPE_CHECKING:
    from gwnmo_meta.tasks.episodes import Episode

ONE_STEP_SCHEDULES = SCHEDULES.names(lambda s: s.one_step)  # alg1, alg2


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


def _detach_all(grads: Sequence[Tensor | None]) -> list[Tensor | None]:
    return [None if g is None else g.detach() for g in grads]


def _step(diffopt: DifferentiableOptimizer, loss: Tensor, x: Tensor, first_order: bool) -> None:
    """One differentiable step; ``first_order`` treats the gradients as constants (no second derivatives)."""
    kwargs: dict[str, Any] = {"grad_callback": _detach_all} if first_order else {}
    if getattr(diffopt, "weighting_net", None) is not None:
        kwargs["features"] = x
    diffopt.step(loss, **kwargs)


def _restart(init: list[Tensor], params: list[Tensor], learn_init: bool) -> list[Tensor]:
    """φ_0 + stopgrad(φ_t − φ_0): the values of φ_t with no path to θ, and ∂/∂φ_0 = I for a learned init."""
    if not learn_init:
        return [p.detach().requires_grad_() for p in params]
    return [p0 + (p - p0).detach() for p0, p in zip(init, params, strict=True)]


def _detach_state(diffopt: DifferentiableOptimizer) -> None:
    """Cut the inner optimizer's state (Adam's moments, HG's step sizes) from earlier updates:
    with the restarted φ_t', step t's update reaches θ through step t alone."""
    for group_state in diffopt.state:
        for st in group_state.values() if isinstance(group_state, dict) else group_state:
            for k, v in list(st.items()):
                if isinstance(v, Tensor):
                    st[k] = v.detach()


def inner_batch_rows(
    support: int,
    ways: int,
    inner_batch: int | None,
    steps: int,
    device: torch.device | str | None = None,
) -> list[Tensor | None]:
    """Support rows of each inner step's mini-batch (``None``: the whole support set).

    Support rows are grouped by class, K = ``support // ways`` each. Mini-batch t takes
    m = ``inner_batch // ways`` rows of every class, walking each class's rows cyclically:
    rows (t·m + j) mod K, j < m. Consecutive mini-batches are disjoint when 2m ≤ K.
    """
    if inner_batch is None:
        return [None] * steps
    shots, per_class = support // ways, inner_batch // ways
    if support % ways or inner_batch % ways or not 0 < per_class <= shots:
        raise ValueError(
            f"inner batch {inner_batch} must be a positive multiple of ways ({ways}) "
            f"of at most the support set's {support} rows"
        )
    offsets = torch.arange(ways, device=device).repeat_interleave(per_class) * shots
    within = torch.arange(per_class, device=device).repeat(ways)
    return [offsets + (t * per_class + within) % shots for t in range(steps)]


def judge_rows(query_y: Tensor, per_class: int, steps: int, seed: int) -> list[Tensor]:
    """Query rows of each inner step's sampled judge: ``per_class`` rows of every class, uniformly
    at random without replacement, drawn afresh for each of ``steps`` steps from ``seed``.

    ``query_y`` holds one task's query labels [n]; every class must have at least ``per_class``
    rows. Returns ``steps`` index tensors of ``ways · per_class`` rows, grouped by class.
    """
    gen = torch.Generator().manual_seed(seed)
    labels = query_y.cpu()
    classes = [(labels == c).nonzero().flatten() for c in labels.unique(sorted=True)]
    if min(len(rows) for rows in classes) < per_class:
        raise ValueError(f"judge_queries {per_class} exceeds a class's query rows")
    out = []
    for _ in range(steps):
        picks = [rows[torch.randperm(len(rows), generator=gen)[:per_class]] for rows in classes]
        out.append(torch.cat(picks).to(query_y.device))
    return out


def _sampled_judges(
    qx: Tensor, qy: Tensor, per_class: int, steps: int, seeds: int | list[int] | None
) -> list[tuple[Tensor, Tensor]]:
    """Per inner step, the (features, labels) of the sampled judge; task-batched when ``qx`` is [T, n, D]."""
    if seeds is None:
        raise ValueError("judge_queries needs episodes with a judge_seed (from an EpisodeSampler)")
    if isinstance(seeds, int) != (qx.dim() == 2):
        raise ValueError("judge_seed: an int for one episode, one per episode for a stack")
    if isinstance(seeds, int):
        return [
            (qx.index_select(0, r), qy.index_select(0, r))
            for r in judge_rows(qy, per_class, steps, seeds)
        ]
    per_task = [judge_rows(qy[i], per_class, steps, s) for i, s in enumerate(seeds)]
    judges = []
    for t in range(steps):
        idx = torch.stack([rows[t] for rows in per_task])  # [T, ways·Q]
        x = qx.gather(1, idx.unsqueeze(-1).expand(-1, -1, qx.shape[-1]))
        judges.append((x, qy.gather(1, idx)))
    return judges


def _rows(x: Tensor, rows: Tensor | None) -> Tensor:
    """``x``'s examples (second-to-last dimension for features, last for labels) at ``rows``."""
    if rows is None:
        return x
    return x.index_select(x.dim() - (2 if x.is_floating_point() else 1), rows)


def run_episode(
    head: nn.Module,
    opt: torch.optim.Optimizer,
    ep: Episode,
    *,
    steps: int,
    schedule: str,
    train: bool,
    learn_init: bool,
    first_order: bool = False,
    inner_batch: int | None = None,
    ways: int | None = None,
    judge_queries: int | None = None,
) -> EpisodeOutcome:
    """Adapt ``head`` with ``opt`` (through higher) on the support set and score the query set.

    ``train=True`` returns the schedule's meta-loss with its graph to θ (and to the init when
    ``learn_init``); ``train=False`` keeps no meta-graph. ``inner_batch`` (with the episode's
    ``ways``): the inner steps walk class-balanced mini-batches of the support set.
    ``judge_queries``: a one-step schedule judges on that many sampled query rows per class.
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
        inner_batch=inner_batch,
        ways=ways,
        judge_queries=judge_queries,
    )
    return outcome


def run_episodes(
    head: nn.Module,
    opt: torch.optim.Optimizer,
    batch: Episode,
    *,
    steps: int,
    schedule: str,
    train: bool,
    learn_init: bool,
    first_order: bool = False,
    inner_batch: int | None = None,
    ways: int | None = None,
    judge_queries: int | None = None,
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
        inner_batch=inner_batch,
        ways=ways,
        judge_queries=judge_queries,
    )


def _adapt(
    head: nn.Module,
    opt: torch.optim.Optimizer,
    ep: Episode,
    *,
    steps: int,
    schedule: str,
    train: bool,
    learn_init: bool,
    first_order: bool,
    inner_batch: int | None = None,
    ways: int | None = None,
    judge_queries: int | None = None,
) -> tuple[Tensor | None, list[EpisodeOutcome]]:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    if inner_batch is not None and ways is None:
        raise ValueError("inner_batch needs the episode's number of ways")
    sx, qx, qy = ep.support_x, ep.query_x, ep.query_y
    batched = sx.dim() == 3
    one_step = train and schedule in ONE_STEP_SCHEDULES
    stream, judges = _stream_and_judges(ep, steps, one_step, inner_batch, ways, judge_queries)
    inner: list[Tensor] = []
    meta_terms: list[Tensor] = []
    curve: list[tuple[Tensor, Tensor]] = []  # evaluation only: query (loss, acc) at φ_0..φ_{k−1}
    with higher.innerloop_ctx(
        head, opt, copy_initial_weights=not (train and learn_init), track_higher_grads=train
    ) as (fmodel, diffopt):
        if batched:  # every task starts from the (shared) init
            fmodel.update_params([p.expand(sx.shape[0], *p.shape) for p in fmodel.parameters()])
        init = list(fmodel.parameters())
        for t, (x, y) in enumerate(stream):
            if one_step and t >= 1:  # one-step truncation: cut φ_t's path through earlier updates
                fmodel.update_params(_restart(init, list(fmodel.parameters()), learn_init))
                _detach_state(diffopt)
            if not train:
                with torch.no_grad():
                    curve.append(query_metrics(fmodel(qx), qy))
            losses = task_losses(fmodel(x), y)
            inner.append(losses.detach())
            # A restarted φ_t without a learned init is a constant leaf: g_t cannot reach θ, so a
            # first-order step gives the same meta-gradient, bit for bit, without building and
            # traversing a second-order graph into a discarded leaf.
            constant_grads = first_order or (one_step and t >= 1 and not learn_init)
            _step(diffopt, losses.sum() if batched else losses, x, constant_grads and train)
            if one_step:  # L(φ_{t+1}; judge_t): update t, judged on data it was not computed from
                meta_terms.append(task_losses(fmodel(judges[t][0]), judges[t][1]))
        if train and not one_step:  # the unrolled schedule: query loss after all steps
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
    outcomes = _outcomes(q_loss, q_acc, inner, stats, curve, meta, weights, batched)
    return (meta.mean() if batched and meta is not None else meta), outcomes


def _stream_and_judges(
    ep: Any,
    steps: int,
    one_step: bool,
    inner_batch: int | None,
    ways: int | None,
    judge_queries: int | None,
) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
    """The data stream (step t is computed on batch t) and what judges each step (a one-step
    schedule judges step t on batch t+1, or on a sampled query subset)."""
    sx, sy, qx, qy = ep.support_x, ep.support_y, ep.query_x, ep.query_y
    batch_rows = inner_batch_rows(sx.shape[-2], ways or 1, inner_batch, steps, sx.device)
    stream = [(_rows(sx, r), _rows(sy, r)) for r in batch_rows]
    if one_step and judge_queries is not None:  # a fresh class-balanced query subset per step
        n_query = steps if inner_batch is None else 1
        sampled = _sampled_judges(qx, qy, judge_queries, n_query, ep.judge_seed)
        judges = sampled if inner_batch is None else stream[1:] + sampled
    else:
        judges = stream[1:] + [(qx, qy)] if inner_batch is not None else [(qx, qy)] * steps
    return stream, judges


def _outcomes(
    q_loss: Tensor,
    q_acc: Tensor,
    inner: list[Tensor],
    stats: dict[str, Tensor],
    curve: list[tuple[Tensor, Tensor]],
    meta: Tensor | None,
    weights: Any,
    batched: bool,
) -> list[EpisodeOutcome]:
    """One :class:`EpisodeOutcome` per task, from one host transfer of all their numbers."""
    # rows = quantities, columns = tasks
    rows = [q_loss.detach(), q_acc] + inner + list(stats.values())
    rows += [c[1] for c in curve] + [c[0] for c in curve]
    table = torch.stack(rows).reshape(len(rows), -1).t().tolist()
    n_inner, n_stats, n_curve = len(inner), len(stats), len(curve)
    c0 = 2 + n_inner + n_stats
    return [
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
