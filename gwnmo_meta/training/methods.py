"""Learned optimizers and baselines behind one interface, on identical episodes.

Every method adapts the same target head (a linear classifier on the frozen features, or two
linear layers with ``head_hidden``) on the support set for ``inner_steps`` steps and is scored on
the query set:

========== ============================================================ =====================
method     inner loop                                                   meta-learned
========== ============================================================ =====================
gwnmo      GWNMO (sigmoid weights, normalised) via higher               M (+ init, + α)
gwnmo-prime GWNMO' (raw weights, no normalisation) via higher           M (+ init, + α)
maml       SGD via ``learn2learn.algorithms.MAML``                      init
meta-sgd   per-parameter step sizes via ``learn2learn.algorithms.MetaSGD`` init + step sizes
hg         hypergradient per-element step sizes (Baydin) via higher     init (with learn-init)
sgd        plain SGD via higher                                         init (with learn-init)
adam       Adam via higher                                              init (with learn-init)
prototype  none: nearest support-class centroid (``reference.py``)      nothing
logreg     none: L-BFGS logistic regression to convergence              nothing
========== ============================================================ =====================

``adapt="all"`` (``--adapt all``): the target is conv4 plus a linear head on flat canonical images
(:class:`~gwnmo_meta.training.targets.Conv4Target`), every parameter adapted in the inner loop from a
meta-learned init (MAML's standard setting); BatchNorm uses each batch's own statistics.

Without ``learn_init`` the head starts every task from the same fixed random initialisation
(drawn from the run's seed); sgd/adam/hg then have nothing to meta-learn (plain fine-tuning).

``task_batch`` (default; the methods adapted through higher): ``episodes`` adapts a meta-batch of
tasks in one task-batched inner loop (``schedules.run_episodes``) — the same per-task maths in
fewer, larger tensor ops; ``False`` adapts them one at a time (how the committed benchmark results
were computed). learn2learn's MAML/Meta-SGD adapt one task at a time either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gwnmo_meta.config import RunConfig, base_default_lr
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.optim.nets import build_weighting, make_head
from gwnmo_meta.registry import METHODS, SCHEDULES, MethodInfo
from gwnmo_meta.tasks.episodes import Episode, stack_episodes
from gwnmo_meta.training.inner_loops import (
    EpisodeOutcome,
    inner_batch_rows,
    query_metrics,
    run_episode,
    run_episodes,
)
from gwnmo_meta.training.targets import IMAGE_DIM, Conv4Target

if TYPE_CHECKING:
    from gwnmo_meta.optim.sgd import StepSizes

# methods with no inner loop and nothing meta-learned (gwnmo_meta/training/reference.py)
REFERENCE_METHODS = METHODS.names(lambda m: m.engine == "reference")


class MethodConfig(RunConfig):
    """How a method adapts and what it meta-learns: the run's config, read by the methods.

    Every field is declared once, in :class:`~gwnmo_meta.config.RunConfig` (a new flag needs no
    edit here), and so is every check (:meth:`~gwnmo_meta.config.RunConfig.validate`); this class
    adds the method-side view (:attr:`lr`, :attr:`info`).
    """

    @property
    def lr(self) -> float:
        """The inner step size (the method's default when unset; 1.0, unused, for references).

        Over a base direction (``--base momentum``/``adam``) the default is the base optimizer's
        (:func:`~gwnmo_meta.config.base_default_lr`).
        """
        if self.inner_lr is not None:
            return self.inner_lr
        over_base = base_default_lr(
            self.base,
            self.base_momentum,
            lambda i: i.inner_lr_all if self.adapt == "all" else i.inner_lr,
        )
        if over_base is not None:
            return over_base
        info = METHODS.get(self.method)
        tuned = (info.inner_lr_all if self.adapt == "all" else info.inner_lr) if info else None
        return tuned.value if tuned else 1.0

    @property
    def info(self) -> MethodInfo:
        """The registry's facts about ``method`` (a registered name: the config is validated)."""
        return METHODS[self.method]


def _seeded_head(cfg: MethodConfig, feature_dim: int, ways: int) -> nn.Module:
    """The target: a head on features, or (``adapt="all"``) conv4 + head on flat images."""
    if cfg.adapt != "all":
        return make_head(feature_dim, ways, cfg.head_hidden)
    if feature_dim != IMAGE_DIM:
        raise ConfigError(f"--adapt all needs {IMAGE_DIM}-dim flat images, got {feature_dim}")
    if cfg.head_hidden is not None:
        raise ConfigError("--head-hidden applies to --adapt head only (conv4 has a linear head)")
    return Conv4Target(ways, bias=cfg.conv_bias)


class MetaMethod(nn.Module):
    """Interface: ``episode(ep, train)`` and ``make_meta_optimizer()``."""

    def __init__(self, cfg: MethodConfig):
        super().__init__()
        self.cfg = cfg

    def meta_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def make_meta_optimizer(self) -> torch.optim.Optimizer | None:
        """Adam with ``meta_lr`` on everything meta-learned, or ``None`` if nothing is.

        Schedule ``alg1``: the one-meta-step-delayed Adam of thesis Algorithm 1
        (``optim.DelayedMetaOptimizer``).
        """
        from gwnmo_meta.optim.gwnmo import DelayedMetaOptimizer

        params = self.meta_parameters()
        if not params:
            return None
        delayed = self.cfg.schedule_name == "alg1"
        cls = DelayedMetaOptimizer if delayed else torch.optim.Adam
        # foreach: one fused pass over M's many small tensors (same numbers as the per-tensor loop)
        return cls(params, lr=self.cfg.meta_lr, foreach=True)

    def inner_lr(self) -> dict[str, float]:
        """The inner step size α as used now: ``{"": α}``, or one entry per tensor when learned per tensor."""
        return {"": self.cfg.lr}

    @property
    def task_batched(self) -> bool:
        """Whether :meth:`episodes` adapts its tasks together (else one at a time)."""
        return False

    def episode(self, ep: Episode, train: bool) -> EpisodeOutcome:  # pragma: no cover - interface
        raise NotImplementedError

    def episodes(
        self, eps: Sequence[Episode], train: bool
    ) -> tuple[Tensor | None, list[EpisodeOutcome]]:
        """Adapt on several episodes: (mean meta-loss or ``None``, one outcome per episode)."""
        outcomes = [self.episode(ep, train) for ep in eps]
        losses = [o.meta_loss for o in outcomes if o.meta_loss is not None]
        return (torch.stack(losses).mean() if losses else None), outcomes


class HigherMethod(MetaMethod):
    """GWNMO, GWNMO', HG, SGD and Adam: a torch optimizer turned differentiable by higher.

    Also MAML and Meta-SGD where learn2learn cannot express the run (a look-ahead schedule, or
    MAML with ``--learn-lr``): MAML as SGD from a learned init, Meta-SGD as SGD with learned
    per-coordinate step sizes (:class:`~gwnmo_meta.optim.sgd.ScaledSGD`) — the same algorithms.
    """

    def __init__(self, cfg: MethodConfig, feature_dim: int, ways: int):
        super().__init__(cfg)
        from gwnmo_meta.optim.gwnmo import LearnedStepSize
        from gwnmo_meta.optim.sgd import CoordinateStepSize, ScaledSGD

        self.ways = ways
        self.head = _seeded_head(cfg, feature_dim, ways)
        params = list(self.head.parameters())
        info = cfg.info
        self.step_size: StepSizes | None = LearnedStepSize.for_mode(
            cfg.learn_lr, cfg.lr, len(params), cfg.inner_steps
        )
        if info.learned_optimizer:
            from gwnmo_meta.optim.direction import Base

            shapes = [tuple(p.shape) for p in params]
            self.weighting = build_weighting(
                cfg.weighting,
                feature_dim,
                shapes,
                hidden=cfg.weighting_hidden,
                prime=info.prime,
                state_inputs=Base(cfg.base).state_inputs,
            )
            self.inner_opt: torch.optim.Optimizer = info.implementation()(
                params,
                self.weighting,
                lr=cfg.lr,
                normalize=not info.prime,
                step_size=self.step_size,
                grad_through_norm=cfg.grad_through_norm,
                base=cfg.base,
                momentum=cfg.base_momentum,
                beta2=cfg.base_beta2,
            )
        elif info.engine == "learn2learn":  # MAML / Meta-SGD through higher
            if cfg.method == "meta-sgd":
                self.step_size = CoordinateStepSize(cfg.lr, [tuple(p.shape) for p in params])
            if self.step_size is None:
                self.inner_opt = torch.optim.SGD(params, lr=cfg.lr)
            else:
                self.inner_opt = ScaledSGD(params, self.step_size, lr=cfg.lr)
        elif self.step_size is not None and cfg.method == "sgd":
            self.inner_opt = ScaledSGD(params, self.step_size, lr=cfg.lr)
        else:
            options = {kw: getattr(cfg, field) for kw, field in info.optimizer_options}
            if self.step_size is not None:  # HG: a meta-learned starting step size
                options["step_size"] = self.step_size
            self.inner_opt = info.implementation()(params, lr=cfg.lr, **options)

    def meta_parameters(self) -> list[nn.Parameter]:
        """M's parameters and the learned step sizes, plus the head's initialisation with ``learn_init``."""
        params = list(self.weighting.parameters()) if hasattr(self, "weighting") else []
        if self.step_size is not None:
            params += list(self.step_size.parameters())
        return params + (list(self.head.parameters()) if self.cfg.learn_init else [])

    def inner_lr(self) -> dict[str, float]:
        if self.step_size is None:
            return super().inner_lr()
        return self.step_size.named_alphas([name for name, _ in self.head.named_parameters()])

    @property
    def task_batched(self) -> bool:
        return self.cfg.task_batch

    def _schedule_kwargs(self, train: bool) -> dict[str, Any]:
        return dict(
            steps=self.cfg.inner_steps,
            schedule=self.cfg.schedule_name,
            train=train and bool(self.meta_parameters()),
            learn_init=self.cfg.learn_init,
            first_order=self.cfg.first_order,
            inner_batch=self.cfg.inner_batch,
            ways=self.ways,
            judge_queries=self.cfg.judge_queries,
        )

    def episode(self, ep: Episode, train: bool) -> EpisodeOutcome:
        return run_episode(self.head, self.inner_opt, ep, **self._schedule_kwargs(train))

    def episodes(
        self, eps: Sequence[Episode], train: bool
    ) -> tuple[Tensor | None, list[EpisodeOutcome]]:
        if not self.cfg.task_batch:
            return super().episodes(eps, train)
        return run_episodes(
            self.head, self.inner_opt, stack_episodes(eps), **self._schedule_kwargs(train)
        )


class L2LMethod(MetaMethod):
    """MAML and Meta-SGD through learn2learn's implementations."""

    def __init__(self, cfg: MethodConfig, feature_dim: int, ways: int):
        super().__init__(cfg)
        cls = cfg.info.implementation()  # imports learn2learn quietly (training/l2l.py)
        self.ways = ways
        head = _seeded_head(cfg, feature_dim, ways)
        self.learner = cls(head, lr=cfg.lr, first_order=cfg.first_order)

    def episode(self, ep: Episode, train: bool) -> EpisodeOutcome:
        learner = self.learner.clone()
        inner = []
        curve: list[Tensor] = []  # evaluation only: query (loss, acc) before each step
        rows = inner_batch_rows(
            len(ep.support_y),
            self.ways,
            self.cfg.inner_batch,
            self.cfg.inner_steps,
            ep.support_x.device,
        )
        for r in rows:
            if not train:
                with torch.no_grad():
                    curve.extend(query_metrics(learner(ep.query_x), ep.query_y))
            x, y = (ep.support_x, ep.support_y) if r is None else (ep.support_x[r], ep.support_y[r])
            loss = F.cross_entropy(learner(x), y)
            inner.append(loss.detach())
            learner.adapt(loss, first_order=True if not train else None)
        if train:
            q_loss, q_acc = query_metrics(learner(ep.query_x), ep.query_y)
        else:
            with torch.no_grad():
                q_loss, q_acc = query_metrics(learner(ep.query_x), ep.query_y)
        if curve:  # the last entry is the final query metrics themselves
            curve.extend((q_loss.detach(), q_acc))
        n = len(inner)
        nums = torch.stack([q_loss.detach(), q_acc] + inner + curve).tolist()
        return EpisodeOutcome(
            meta_loss=q_loss if train else None,
            query_loss=nums[0],
            query_acc=nums[1],
            inner_losses=nums[2 : 2 + n],
            step_query_acc=nums[3 + n :: 2],
            step_query_loss=nums[2 + n :: 2],
        )


def runs_through_higher(cfg: RunConfig) -> bool:
    """Whether a learn2learn method (MAML, Meta-SGD) runs through higher instead: under a look-ahead
    schedule, or with a learned step size, which learn2learn's wrappers cannot express."""
    return SCHEDULES[cfg.schedule_name].one_step or cfg.learn_lr != "off"


def build_method(
    cfg: MethodConfig, feature_dim: int, ways: int, device: torch.device | str = "cpu"
) -> MetaMethod:
    """The :class:`MetaMethod` for ``cfg.method`` on ``device``.

    Args:
        cfg: the method's configuration (its method options are validated here:
            :meth:`~gwnmo_meta.config.RunConfig.validate_method`).
        feature_dim: width of the features the target head reads.
        ways: N, the head's number of outputs.
        device: where its parameters live.

    Returns:
        The method; its initialisation depends on ``cfg.seed`` only (the global RNG is untouched).
    """
    cfg.validate_method()
    return make_method(cfg, feature_dim, ways, device)


def make_method(
    cfg: MethodConfig, feature_dim: int, ways: int, device: torch.device | str = "cpu"
) -> MetaMethod:
    """:func:`build_method` for a ``cfg`` already validated (``meta_train`` and the evaluators
    validate the run's config once, where they receive it)."""
    info = cfg.info
    if info.engine == "reference":
        cls: Callable[[MethodConfig, int, int], MetaMethod] = info.implementation()
    elif info.engine == "learn2learn" and not runs_through_higher(cfg):
        cls = L2LMethod
    else:
        cls = HigherMethod
    with torch.random.fork_rng(devices=[]):  # initialisation depends on cfg.seed only
        torch.manual_seed(cfg.seed)
        method = cls(cfg, feature_dim, ways)
    return method.to(device)
