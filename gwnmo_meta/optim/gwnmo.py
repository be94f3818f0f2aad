"""GWNMO and HG as optimizers in both worlds: ``torch.optim`` and higher's differentiable inner loops.

``higher.innerloop_ctx(target, GWNMO(target.parameters(), weighting_net=M, lr=α))`` yields a
differentiable inner loop; each step takes the batch features::

    diffopt.step(loss, features=x)          # or higher's channel: override={"features": [x]}

For a task-batched loop (fast weights with a leading task dimension T, see
``gwnmo_meta.training.inner_loops.run_episodes``) pass features [T, B, D]: norms and M's statistics are then
taken per task. Gradients reach θ (M's parameters) through the updates. M is kept as an attribute of the torch
optimizer (higher deep-copies param groups, which would detach a module stored there).

``base="momentum"``/``"adam"`` (:class:`~gwnmo_meta.optim.direction.Base`): GWNMO weights the base
optimizer's direction u instead of g, Δ = (‖u‖/‖h∘u‖)·(h∘u), and M also reads the base's state.
The state lives in the optimizer's ``state`` (torch's key names), so a differentiable inner loop
starts it fresh in every ``innerloop_ctx`` (every episode) and holds [T, ...] tensors when task-batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import higher
import torch
from higher.optim import DifferentiableOptimizer
from torch import Tensor, nn

from gwnmo_meta.functional import gwnmo_delta
from gwnmo_meta.optim.direction import (
    Base,
    bias_mask,
    direction_stats,
    flat_direction_stats,
    gwnmo_direction,
    task_normalised_direction,
)
from gwnmo_meta.optim.factored import FactoredWeighting, expand_rows, unit_stats
from gwnmo_meta.optim.nets import split_like


class LearnedStepSize(nn.Module):
    """A meta-learned inner step size α = exp(log α): one for the whole target, one per tensor, or
    one per tensor and inner step (MAML++'s LSLR; steps past the last learned one reuse it).

    Log-parameterised so α stays positive and Adam's steps on it are relative. Starts at ``lr``.
    ``log_lr`` is [1] (global), [tensors] (per tensor) or [steps, tensors] (per tensor and step).
    """

    def __init__(self, lr: float, num_tensors: int, per_tensor: bool = False, steps: int = 0):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.num_tensors = num_tensors
        shape = (steps, num_tensors) if steps else (num_tensors if per_tensor else 1,)
        self.log_lr = nn.Parameter(torch.full(shape, math.log(lr)))

    @classmethod
    def for_mode(cls, mode: str, lr: float, num_tensors: int, steps: int) -> LearnedStepSize | None:
        """The step sizes of ``--learn-lr MODE`` (``None`` for ``off``)."""
        if mode == "off":
            return None
        return cls(
            lr,
            num_tensors,
            per_tensor=mode != "global",
            steps=steps if mode == "tensor-step" else 0,
        )

    def alphas(self, step: int = 0) -> list[Tensor]:
        """α for each of the target's tensors at inner step ``step`` (0-dim, with their graph)."""
        lr = self.log_lr.exp()
        if lr.dim() == 2:
            return list(lr[min(step, lr.shape[0] - 1)].unbind())
        return [lr[i if lr.numel() > 1 else 0] for i in range(self.num_tensors)]

    def named_alphas(self, names: Sequence[str]) -> dict[str, float]:
        """α as logged (``lr/inner/*``): ``{"": α}``, one per tensor, or ``tensor@step`` per step."""
        lr = self.log_lr.detach().exp()
        if lr.numel() == 1:
            return {"": float(lr)}
        if lr.dim() == 1:
            return dict(zip(names, lr.tolist(), strict=True))
        return {
            f"{name}@{s}": a
            for s, row in enumerate(lr.tolist())
            for name, a in zip(names, row, strict=True)
        }


def _state_kw(state: Sequence[Sequence[Tensor]] | None) -> dict[str, Any]:
    """M's keyword for the base's state: none at all for the gradient base (any M fits then)."""
    return {} if state is None else {"state": state}


def _base(group: dict[str, Any]) -> Base:
    return Base(group["base"], group["momentum"], group["beta2"], group["base_eps"])


def _step_sizes(
    group: dict[str, Any], step_size: LearnedStepSize | None, n: int, step: int = 0
) -> Sequence[Tensor | float]:
    """α per tensor at inner step ``step``: the learned step sizes, else the group's ``lr``."""
    return step_size.alphas(step) if step_size is not None else [group["lr"]] * n


class GWNMO(torch.optim.Optimizer):
    """GWNMO for ordinary training: x ← x − α·Δ with Δ from :func:`gwnmo_direction`.

    ``normalize=False`` gives GWNMO' (no sigmoid, no rescaling). M's inputs are detached φ and g;
    training M itself is the job of a schedule (see ``gwnmo_meta.training.inner_loops`` / ``classic``).
    ``step_size``: a :class:`LearnedStepSize` used instead of ``lr`` (its tensors index the
    parameters in order). ``grad_through_norm``: let meta-gradients through ‖g‖ (the legacy
    step-length loophole; see :func:`~gwnmo_meta.optim.direction.gwnmo_direction`).
    ``base``: the direction weighted (``grad``, ``momentum`` or ``adam``, see
    :class:`~gwnmo_meta.optim.direction.Base`; M must be built with its ``state_inputs``), with
    ``momentum`` (momentum's μ, Adam's β1), ``beta2`` and ``base_eps`` (Adam's β2 and ε).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        weighting_net: nn.Module,
        lr: float = 0.1,
        normalize: bool = True,
        step_size: LearnedStepSize | None = None,
        grad_through_norm: bool = False,
        base: str = "grad",
        momentum: float = 0.9,
        beta2: float = 0.999,
        base_eps: float = 1e-8,
    ):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        spec = Base(base, momentum, beta2, base_eps)
        if getattr(weighting_net, "state_inputs", 0) != spec.state_inputs:
            raise ValueError(
                f"base {base!r} needs a weighting network built with state_inputs="
                f"{spec.state_inputs}, got {getattr(weighting_net, 'state_inputs', 0)}"
            )
        defaults = dict(lr=lr, normalize=normalize, features=None)
        bases = dict(base=base, momentum=momentum, beta2=beta2, base_eps=base_eps)
        super().__init__(params, defaults | dict(grad_through_norm=grad_through_norm) | bases)
        self.weighting_net = weighting_net
        self.step_size = step_size
        self.last_stats: dict[str, Tensor] = {}
        self.last_h: Tensor | None = None

    @torch.no_grad()
    def step(  # type: ignore[override]  # the batch features are a required argument here
        self, closure: Callable[[], float] | None = None, *, features: Tensor
    ) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lrs = _step_sizes(group, self.step_size, len(group["params"]))
            idx = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            if not idx:
                continue
            ps = [group["params"][i] for i in idx]
            grads = [p.grad for p in ps]
            states, us, m_state = _base(group).steps([self.state[p] for p in ps], grads)
            for p, st in zip(ps, states, strict=True):
                if st:
                    self.state[p] = st
            delta, h = gwnmo_delta(
                self.weighting_net,
                features,
                ps,
                grads,
                group["normalize"],
                state=m_state,
                direction=us,
            )
            for i, p, d in zip(idx, ps, delta, strict=True):
                p.sub_(lrs[i] * d)
            self.last_stats = direction_stats(us, h, delta)
            self.last_h = torch.cat([x.reshape(-1) for x in h])
        return loss


class DifferentiableGWNMO(DifferentiableOptimizer):
    """higher's differentiable counterpart of :class:`GWNMO` (registered with ``higher.register_optim``)."""

    def __init__(
        self, other: GWNMO, reference_params: Iterable[Tensor], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(other, reference_params, *args, **kwargs)
        self.weighting_net = other.weighting_net
        self.step_size = other.step_size
        self._features: Tensor | None = None
        self._last_h: Tensor | None = None
        self._last_rows: tuple[Tensor, list[torch.Size]] | None = None
        # Detached flat (g, h, Δ) of recent steps; folded into running sums every TRACE_FOLD steps,
        # so statistics cost a few batched ops per episode and memory stays bounded on long loops.
        self._trace: list[tuple[Tensor, Tensor, Tensor]] = []
        # the fused factored steps' detached (h rows, weighted direction), per (normalize, lead)
        self._row_trace: dict[tuple[bool, int], list[tuple[Tensor, list[Tensor]]]] = {}
        self._stat_sums: dict[str, Tensor] = {}
        self._stat_steps = 0
        self._bias_mask: Tensor | None = None
        self._inner_step = 0  # this episode's inner step (higher makes one optimizer per episode)

    TRACE_FOLD = 16

    @property
    def last_h(self) -> Tensor | None:
        """h of the latest step, flattened ([T, P] when task-batched); ``None`` before a step."""
        if self._last_rows is not None:  # factored M: per-coordinate h built only when asked for
            self._last_h, self._last_rows = expand_rows(*self._last_rows), None
        return self._last_h

    def _record(self, g: Tensor, h: Tensor, delta: Tensor, shapes: Sequence[Sequence[int]]) -> None:
        self._last_h, self._last_rows = h, None
        if self._bias_mask is None:
            self._bias_mask = bias_mask(shapes).to(g.device)
        self._trace.append((g, h, delta))
        if len(self._trace) >= self.TRACE_FOLD:
            self._fold()

    def _fold(self) -> None:
        g, h, delta = (torch.stack([t[i] for t in self._trace]) for i in range(3))
        for k, v in flat_direction_stats(g, h, delta, self._bias_mask).items():
            self._stat_sums[k] = v.sum(0) + self._stat_sums[k] if k in self._stat_sums else v.sum(0)
        self._stat_steps += len(self._trace)
        self._trace.clear()

    def _add_stats(self, sums: dict[str, Tensor], steps: int) -> None:
        for k, v in sums.items():
            self._stat_sums[k] = v + self._stat_sums[k] if k in self._stat_sums else v
        self._stat_steps += steps

    def _record_rows(self, h: Tensor, direction: list[Tensor], normalize: bool, lead: int) -> None:
        """Keep a fused factored step's row weights and weighted direction (detached); their
        statistics are computed for a stack of steps at once (:meth:`_fold_rows`)."""
        trace = self._row_trace.setdefault((normalize, lead), [])
        trace.append((h, direction))
        if len(trace) >= self.TRACE_FOLD:
            self._fold_rows()

    def _fold_rows(self) -> None:
        for (normalize, lead), trace in self._row_trace.items():
            if not trace:
                continue
            h = torch.stack([t[0] for t in trace])
            direction = [torch.stack(us) for us in zip(*(t[1] for t in trace), strict=True)]
            stats = unit_stats(h, direction, lead + 1, normalize=normalize)
            self._add_stats({k: v.sum(0) for k, v in stats.items()}, len(trace))
            trace.clear()

    def step_stats(self) -> dict[str, Tensor]:
        """:func:`~gwnmo_meta.optim.direction.direction_stats` averaged over the steps so far.

        0-dim tensors, or [T] when task-batched; ``{}`` before the first step.
        """
        if self._trace:
            self._fold()
        self._fold_rows()
        return {k: v / self._stat_steps for k, v in self._stat_sums.items()}

    def _flat_weights(
        self,
        features: Tensor,
        params: list[Tensor],
        grads: list[Tensor],
        state: list[list[Tensor]] | None = None,
    ) -> Tensor:
        """M's raw outputs for a task batch as one [T, P] tensor (M's ``forward_flat`` when it has one)."""
        net, kw = self.weighting_net, _state_kw(state)
        forward_flat: Callable[..., Tensor] | None = getattr(net, "forward_flat", None)
        if forward_flat is not None:
            return forward_flat(features, params, grads, **kw)
        return torch.cat(
            [r.reshape(features.shape[0], -1) for r in net(features, params, grads, **kw)], -1
        )

    def step(
        self,
        loss: Tensor,
        params: Iterable[Tensor] | None = None,
        override: dict[str, list[Any]] | None = None,
        grad_callback: Callable[[list[Tensor]], list[Tensor]] | None = None,
        features: Tensor | None = None,
        **kwargs: Any,
    ) -> list[Tensor]:
        """higher's step, plus ``features=``: the batch features M sees at this step."""
        self._features = features
        try:
            return super().step(
                loss, params=params, override=override, grad_callback=grad_callback, **kwargs
            )
        finally:
            self._features = None

    def _update(self, grouped_grads: list[list[Tensor | None]], **kwargs: Any) -> None:
        step, self._inner_step = self._inner_step, self._inner_step + 1
        for group_idx, (group, grads) in enumerate(
            zip(self.param_groups, grouped_grads, strict=False)
        ):
            features = self._features if self._features is not None else group.get("features")
            if features is None:
                raise ValueError("GWNMO needs the batch features: diffopt.step(loss, features=x)")
            idx = [i for i, g in enumerate(grads) if g is not None]
            ps = [group["params"][i] for i in idx]
            gs = [g for g in grads if g is not None]
            # the base direction u (g itself for the gradient base) and its state, per task
            st = self.state[group_idx]
            states, us, base_state = _base(group).steps([st[i] for i in idx], gs)
            for i, new_state in zip(idx, states, strict=True):
                st[i] = new_state
            # M sees φ, g and the base state as data (detached, as in Andrychowicz et al.); θ's
            # meta-gradient flows through h, and through φ and u via Δ (g is detached by a
            # first-order grad_callback).
            m_params, m_grads = [p.detach() for p in ps], [g.detach() for g in gs]
            m_state = (
                None if base_state is None else [[s.detach() for s in xs] for xs in base_state]
            )
            through_norm = group.get("grad_through_norm", False)
            if isinstance(self.weighting_net, FactoredWeighting) and self.step_size is None:
                # one weight per row: a fused step, no per-coordinate h or flat vectors
                new, h_rows = self.weighting_net.step(
                    features,
                    ps,
                    gs,
                    group["lr"],
                    normalize=group["normalize"],
                    grad_through_norm=through_norm,
                    state=m_state,
                    direction=None if m_state is None else us,
                )
                lead, h_rows = features.dim() - 2, h_rows.detach()
                weighted = m_grads if m_state is None else [u.detach() for u in us]
                self._record_rows(h_rows, weighted, group["normalize"], lead)
                self._last_rows = (h_rows, [p.shape[lead:] for p in ps])
                for i, p in zip(idx, new, strict=True):
                    group["params"][i] = p
                continue
            if features.dim() == 3:
                # Task-batched loop: the whole target as one [T, P] tensor, norms per task.
                lead = (features.shape[0],)
                shapes = [p.shape[1:] for p in ps]
                flat_raw = self._flat_weights(features, m_params, m_grads, m_state)
                g_flat = torch.cat([u.reshape(*lead, -1) for u in us], -1)
                if group["normalize"]:
                    h_flat = torch.sigmoid(flat_raw)
                    d_flat = task_normalised_direction(
                        g_flat, h_flat, grad_through_norm=through_norm
                    )
                else:
                    h_flat, d_flat = flat_raw, flat_raw * g_flat
                delta = split_like(d_flat, shapes)
                self._record(g_flat.detach(), h_flat.detach(), d_flat.detach(), shapes)
            else:
                shapes = [p.shape for p in ps]
                raw = self.weighting_net(features, m_params, m_grads, **_state_kw(m_state))
                h = [torch.sigmoid(r) for r in raw] if group["normalize"] else list(raw)
                delta = gwnmo_direction(
                    us, h, normalize=group["normalize"], grad_through_norm=through_norm
                )
                g_rec, h_rec, d_rec = (
                    torch.cat([x.detach().reshape(-1) for x in xs]) for xs in (us, h, delta)
                )
                self._record(g_rec, h_rec, d_rec, shapes)
            lrs = _step_sizes(group, self.step_size, len(group["params"]), step)
            for i, p, d in zip(idx, ps, delta, strict=True):
                group["params"][i] = p - lrs[i] * d


class HG(torch.optim.Optimizer):
    """Hypergradient descent with one step size per gradient element (Baydin et al. 2018; thesis baseline).

    α_{t+1} = α_t + β·(g_t ∘ g_{t−1}) elementwise, x_{t+1} = x_t − α_t ∘ g_t (α starts at ``lr``).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.1,
        beta: float = 1e-4,
        step_size: LearnedStepSize | None = None,
    ):
        if lr <= 0 or beta < 0:
            raise ValueError("HG needs lr > 0 and beta >= 0")
        super().__init__(params, dict(lr=lr, beta=beta))
        self.step_size = step_size  # meta-learned α_t (the differentiable version reads it)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "alpha" not in st:
                    st["alpha"] = torch.full_like(p, group["lr"])
                else:
                    st["alpha"].add_(group["beta"] * p.grad * st["prev_grad"])
                st["prev_grad"] = p.grad.clone()
                p.sub_(st["alpha"] * p.grad)
        return loss


class DifferentiableHG(DifferentiableOptimizer):
    """higher's differentiable counterpart of :class:`HG`.

    With a meta-learned ``step_size`` (``--learn-lr``) the step sizes are α_t = ℓ_t + a_t: the
    learned ℓ_t (per tensor, per step with ``tensor-step``) plus the hypergradient's own
    adjustment a_t (a_0 = 0, a_{t+1} = a_t + β·g_{t+1}∘g_t), which is plain HG when ℓ_t = lr.
    """

    def __init__(self, other: HG, reference_params: Iterable[Tensor], *args: Any, **kwargs: Any):
        super().__init__(other, reference_params, *args, **kwargs)
        self.step_size = getattr(other, "step_size", None)
        self._inner_step = 0

    def _update(self, grouped_grads: list[list[Tensor | None]], **kwargs: Any) -> None:
        if self.step_size is not None:
            self._update_learned(grouped_grads)
            return
        for group_idx, (group, grads) in enumerate(
            zip(self.param_groups, grouped_grads, strict=False)
        ):
            for p_idx, (p, g) in enumerate(zip(group["params"], grads, strict=False)):
                if g is None:
                    continue
                st = self.state[group_idx][p_idx]
                if "alpha" not in st:
                    alpha = torch.full_like(p, group["lr"])
                else:
                    alpha = st["alpha"] + group["beta"] * g * st["prev_grad"]
                st["alpha"], st["prev_grad"] = alpha, g
                group["params"][p_idx] = p - alpha * g

    def _update_learned(self, grouped_grads: list[list[Tensor | None]]) -> None:
        step, self._inner_step = self._inner_step, self._inner_step + 1
        for group_idx, (group, grads) in enumerate(
            zip(self.param_groups, grouped_grads, strict=False)
        ):
            learned = _step_sizes(group, self.step_size, len(group["params"]), step)
            for p_idx, (p, g) in enumerate(zip(group["params"], grads, strict=False)):
                if g is None:
                    continue
                st = self.state[group_idx][p_idx]
                adjust = st["adjust"] + group["beta"] * g * st["prev_grad"] if "adjust" in st else 0
                st["adjust"], st["prev_grad"] = adjust, g
                group["params"][p_idx] = p - (learned[p_idx] + adjust) * g


higher.register_optim(GWNMO, DifferentiableGWNMO)
higher.register_optim(HG, DifferentiableHG)


class DelayedMetaOptimizer(torch.optim.Adam):
    """Adam whose ``step`` applies the gradients of the *previous* call (schedule ``alg1``).

    Thesis Algorithm 1 moves θ one step late: the loss that judges the update computed with θ_t
    changes θ only after θ_t has produced the next weighting. With θ updated once per meta-batch
    this is a one-meta-step delay: meta-step n applies the meta-gradient of meta-batch n−1
    (computed at θ_{n−1}); the first call stores its gradients and leaves θ as it is. The pending
    gradients are part of ``state_dict`` so a resumed run continues exactly.
    """

    def __init__(self, params: Iterable[Tensor], **kwargs: Any):
        super().__init__(params, **kwargs)
        self._pending: list[Tensor | None] | None = None

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        params = self._params()
        current = [None if p.grad is None else p.grad.clone() for p in params]
        previous, self._pending = self._pending, current
        if previous is None:
            return None
        for p, g in zip(params, previous, strict=True):
            p.grad = g
        return super().step(closure)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending_grads": self._pending}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self._pending = state_dict.pop("pending_grads", None)
        super().load_state_dict(state_dict)
