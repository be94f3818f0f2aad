"""The learners of classic training: the target T, GWNMO learning online, and torch baselines.

:class:`OnlineGWNMO` runs thesis Algorithms 1 and 2 over a stream of mini-batches with functional
target parameters and snapshots of M's parameters (see :mod:`gwnmo_meta.training.classic`);
:class:`TorchLearner` steps a torch optimizer (Adam, SGD, HG) through the same interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from gwnmo_meta.errors import CheckpointError
from gwnmo_meta.optim.factored import FactoredWeighting

if TYPE_CHECKING:
    from gwnmo_meta.training.classic import ClassicConfig


def make_target(feature_dim: int, hidden: int, classes: int) -> nn.Module:
    """The thesis's target T: two linear layers (ReLU between) on top of frozen features."""
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))


@torch.no_grad()
def evaluate_target(
    target: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor, batch: int = 4096
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``target`` with ``params`` on (x, y)."""
    correct, loss = 0.0, 0.0
    for i in range(0, len(x), batch):
        logits = functional_call(target, params, (x[i : i + batch],))
        loss += float(F.cross_entropy(logits, y[i : i + batch], reduction="sum"))
        correct += float((logits.argmax(1) == y[i : i + batch]).sum())
    return correct / len(x), loss / len(x)


def load_weighting_state(path: str | Path) -> dict[str, Tensor]:
    """M's parameters from a meta-train (few-shot) or classic checkpoint."""
    from gwnmo_meta.io.checkpoint import KIND_CLASSIC, KIND_CLASSIC_RUN, load_checkpoint

    body = load_checkpoint(path)  # weights-only, digest- and structure-checked
    if body["kind"] in (KIND_CLASSIC, KIND_CLASSIC_RUN):
        state = body["weighting"] or {}
    else:
        method_state = body.get("method", {})
        prefix = "weighting."
        state = {k[len(prefix) :]: v for k, v in method_state.items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(
            f"checkpoint {path} holds no GWNMO weighting network (was it meta-trained with --method gwnmo?)"
        )
    return state


class OnlineGWNMO:
    """Algorithms 1 and 2 over a stream of mini-batches, with functional (differentiable) target params.

    Each update φ_{t+1} = φ_t − αΔ_t is computed with a snapshot θ'_t of M's parameters, so the
    loss of the next batch, L(φ_{t+1}; X_{t+1}), can be differentiated w.r.t. θ'_t even after θ
    itself has moved. Both algorithms take their meta-step on exactly that quantity; they differ in
    *when* it lands (thesis listings): Algorithm 2 steps θ before the weighting of batch t+1 is
    computed, Algorithm 1 computes the weighting of batch t+1 with the old θ and steps θ after it
    (a one-step-delayed meta-update).

    With ``cfg.base`` other than ``grad`` the update weights the base optimizer's direction u
    (:class:`~gwnmo_meta.optim.direction.Base`) and M also reads its state; that state belongs to
    the run (one target), is updated with the detached gradients, and is what :meth:`state_dict`
    saves.
    """

    def __init__(
        self,
        target: nn.Module,
        weighting: nn.Module,
        cfg: ClassicConfig,
        meta_opt: torch.optim.Optimizer | None,
    ):
        from gwnmo_meta.optim.direction import Base, gwnmo_direction

        self.direction = gwnmo_direction
        self.base = Base(cfg.base, cfg.base_momentum, cfg.base_beta2)
        self.base_state: dict[str, dict[str, Any]] = {}  # per target tensor, torch's key names
        self.target, self.weighting, self.cfg, self.meta_opt = target, weighting, cfg, meta_opt
        self.names = [n for n, _ in target.named_parameters()]
        self.params = {n: p.detach().clone() for n, p in target.named_parameters()}
        self.normalize = not cfg.info.prime
        self.snapshot: dict[str, Tensor] | None = None  # θ' used by the latest update
        self.last: tuple[dict[str, Tensor], Tensor, Tensor] | None = None  # its (φ, x, y)
        self._base_before: dict[str, dict[str, Any]] = {}  # the base state before that update
        # the factored M steps fused (its own step): row weights never expanded per coordinate
        self._fused = _FusedStep(weighting) if isinstance(weighting, FactoredWeighting) else None

    def _loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(self.target, params, (x,)), y)

    def _grads(
        self, params: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """The loss at φ (detached) and its gradient."""
        leaf = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        loss = self._loss(leaf, x, y)
        grads = torch.autograd.grad(loss, [leaf[n] for n in self.names])
        return loss.detach(), [g.detach() for g in grads]

    def _update(
        self,
        params: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        theta: dict[str, Tensor] | None = None,
        loss_and_grads: tuple[Tensor, list[Tensor]] | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """φ' = φ − αΔ(θ') from φ (detached), differentiable in a fresh snapshot θ' of M's
        parameters (or of ``theta``). Returns (φ', loss at φ). ``loss_and_grads``: the loss at φ
        and its gradient when the caller has them already."""
        self.last = ({n: p.detach() for n, p in params.items()}, x, y)
        self._base_before = self.base_state  # Base.steps is pure: these dicts stay as they are
        loss, glist = loss_and_grads or self._grads(params, x, y)
        plist = [params[n].detach() for n in self.names]
        states, ulist, base_inputs = self.base.steps(
            [self.base_state.get(n, {}) for n in self.names], glist
        )
        self.base_state = {n: st for n, st in zip(self.names, states, strict=True) if st}
        self.snapshot = {
            n: (p if theta is None else theta[n]).detach().clone().requires_grad_(p.requires_grad)
            for n, p in self.weighting.named_parameters()
        }
        kwargs = {} if base_inputs is None else {"state": base_inputs}
        if self._fused is not None:  # the factored M: one weight per row, its fused step
            snapshot = {f"net.{n}": p for n, p in self.snapshot.items()}
            step_kw = kwargs | {
                "normalize": self.normalize,
                "direction": None if base_inputs is None else ulist,
            }
            args = (x, plist, glist, self.cfg.step_size)
            stepped, _ = functional_call(self._fused, snapshot, args, step_kw)
            return dict(zip(self.names, stepped, strict=True)), loss
        raw = functional_call(self.weighting, self.snapshot, (x, plist, glist), kwargs)
        h = [torch.sigmoid(r) for r in raw] if self.normalize else list(raw)
        delta = self.direction(ulist, h, normalize=self.normalize)
        new = {
            n: p - self.cfg.step_size * d for n, p, d in zip(self.names, plist, delta, strict=False)
        }
        return new, loss

    def _judge(
        self, x: Tensor, y: Tensor
    ) -> tuple[list[Tensor | None] | None, tuple[Tensor, list[Tensor]]]:
        """One forward and backward at φ_t on batch t, for both of its uses: ∇_{θ'} L(φ_t; X_t)
        through the latest update (None before the first update or when M is frozen), and the
        loss and gradient ∇_φ L(φ_t; X_t) the next update takes. The gradient reaches θ' as
        ∂φ_t/∂θ' applied to ∇_φ L, so the target is run once, not twice."""
        phi = [self.params[n] for n in self.names]
        if self.meta_opt is None or self.snapshot is None or not all(p.requires_grad for p in phi):
            return None, self._grads(self.params, x, y)
        loss = self._loss(self.params, x, y)
        grads = [g.detach() for g in torch.autograd.grad(loss, phi)]
        keys = [n for n, p in self.snapshot.items() if p.requires_grad]
        meta = torch.autograd.grad(
            phi, [self.snapshot[n] for n in keys], grad_outputs=grads, allow_unused=True
        )
        by_name = dict(zip(keys, meta, strict=True))
        judged = [by_name.get(n) for n, _ in self.weighting.named_parameters()]
        return judged, (loss.detach(), grads)

    def _apply(self, grads: list[Tensor | None] | None) -> None:
        if grads is None or self.meta_opt is None:
            return
        for p, g in zip(self.weighting.parameters(), grads, strict=False):
            p.grad = None if g is None else g.detach()
        self.meta_opt.step()

    def step(self, x: Tensor, y: Tensor) -> float:
        """Consume one mini-batch; returns the target's loss on it (before its update)."""
        meta, loss_and_grads = self._judge(x, y)  # this batch judges the previous update
        if self.cfg.schedule == "alg2":
            self._apply(meta)  # θ moves first, the new weighting uses it
            self.params, loss = self._update(self.params, x, y, loss_and_grads=loss_and_grads)
        else:  # weighting with θ_t, then θ_{t+1} = θ_t − β∇_θ L
            self.params, loss = self._update(self.params, x, y, loss_and_grads=loss_and_grads)
            self._apply(meta)
        return float(loss)

    def current(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.params.items()}

    def state_dict(self) -> dict[str, Any]:
        """φ, the base direction's state, and the latest update's inputs (φ and the base state
        before it, θ', the batch) to rebuild its graph."""
        state: dict[str, Any] = {
            "params": self.current(),
            "base_state": _copy_state(self.base_state),
        }
        if self.snapshot is not None and self.last is not None:
            prev, x, y = self.last
            theta = {n: t.detach() for n, t in self.snapshot.items()}
            state.update(prev=prev, theta=theta, x=x, y=y)
            state["base_state"] = _copy_state(self._base_before)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the latest update is recomputed (same inputs, same
        base state, same result), so the next batch can judge it through θ' as in the
        uninterrupted run."""
        saved = state.get("base_state", {})
        unknown = set(saved) - set(self.names)
        if unknown:
            raise CheckpointError(
                f"the saved base state names tensors this target lacks: {', '.join(sorted(unknown))}"
            )
        self.base_state = _copy_state(saved)
        if "prev" in state:
            self.params, _ = self._update(state["prev"], state["x"], state["y"], state["theta"])
        else:
            self.params = {n: state["params"][n].detach().clone() for n in self.names}


class _FusedStep(nn.Module):
    """The factored M's fused step (:meth:`FactoredWeighting.step`) as a module's forward, so
    ``functional_call`` can run it with a snapshot of M's parameters."""

    def __init__(self, net: FactoredWeighting):
        super().__init__()
        self.net = net

    def forward(self, *args: Any, **kwargs: Any) -> tuple[list[Tensor], Tensor]:
        return self.net.step(*args, **kwargs)


def _copy_state(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-tensor base states, detached (a checkpoint holds no graph)."""
    return {
        n: {k: v.detach() if isinstance(v, Tensor) else v for k, v in st.items()}
        for n, st in state.items()
    }


def make_weighting(
    cfg: ClassicConfig,
    target: nn.Module,
    feature_dim: int,
    device: torch.device,
    state: dict[str, Tensor] | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer | None]:
    """M for ``target`` (from ``state``, a ``--weighting-from`` M, when given) and its Adam
    (``None`` with ``--freeze-weighting``)."""
    from gwnmo_meta.optim.direction import Base
    from gwnmo_meta.optim.nets import build_weighting

    shapes = [tuple(p.shape) for p in target.parameters()]
    inputs = Base(cfg.base).state_inputs
    weighting = build_weighting(
        cfg.weighting, feature_dim, shapes, prime=cfg.info.prime, state_inputs=inputs
    ).to(device)
    if state is not None:
        try:
            weighting.load_state_dict(state)
        except RuntimeError:
            raise CheckpointError(
                f"the weighting network in {cfg.weighting_from} does not fit this target/--weighting "
                f"{cfg.weighting} ({_weighting_hint(cfg)})"
            ) from None
    if cfg.freeze_weighting:
        weighting.requires_grad_(False)
        return weighting, None
    # foreach: the same arithmetic as the per-tensor loop (bit for bit), 1.7× faster on the
    # thesis M, whose Adam step is over half of a classic step
    return weighting, torch.optim.Adam(weighting.parameters(), lr=cfg.meta_lr, foreach=True)


def _weighting_hint(cfg: ClassicConfig) -> str:
    """Why a --weighting-from M does not fit, from the kind and width the checkpoint's run used."""
    from gwnmo_meta.io.checkpoint import load_checkpoint

    assert cfg.weighting_from is not None  # the M that did not fit came from it
    saved = load_checkpoint(cfg.weighting_from)["config"]
    kind, hidden = saved.get("weighting"), saved.get("weighting_hidden", 32)
    if kind is not None and kind != cfg.weighting:
        return f"the checkpoint's M is --weighting {kind}; pass --weighting {kind}"
    if kind == "mlp":
        return (
            "the thesis mlp is tied to the target's size; train the same target as the "
            "checkpoint's run, or use a checkpoint meta-trained with --weighting coordinate"
        )
    if hidden != 32:
        return f"the checkpoint's M has hidden width {hidden}; classic training builds M with 32"
    return "it was trained for other sizes"


class TorchLearner:
    """A baseline optimizer (Adam / SGD / HG ...) on the target, through the same step() interface."""

    def __init__(self, target: nn.Module, cfg: ClassicConfig):
        self.target = target
        options = {kw: getattr(cfg, field) for kw, field in cfg.info.optimizer_options}
        self.opt = cfg.info.implementation()(list(target.parameters()), lr=cfg.step_size, **options)

    def step(self, x: Tensor, y: Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.target(x), y)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def current(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.target.named_parameters()}

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["optimizer"])
