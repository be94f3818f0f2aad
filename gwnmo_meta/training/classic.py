"""Classic training mode (thesis Tables 1 and 2): GWNMO as an online meta-optimizer in ordinary training.

A frozen backbone E gives features; the target T (two linear layers with a ReLU between, as in
the thesis) is trained on the dataset's full torchvision train split, mini-batch by mini-batch,
while the weighting network M learns online:

* ``alg1`` (Algorithm 1): at batch t the loss L_t = f(T(φ_t; X_t), y_t) is evaluated at φ_t,
  which depends on θ only through the previous update φ_t = φ_{t−1} − αΔ_{t−1}(θ). The update
  φ_{t+1} = φ_t − αΔ_t(θ_t) is formed with the current θ_t, then θ takes its Adam step on ∇_θ L_t.
* ``alg2`` (Algorithm 2): at batch t, φ_{t+1} = φ_t − αΔ_t(θ_t); the loss on the NEXT batch
  L' = f(T(φ_{t+1}; X_{t+1}), y_{t+1}) gives θ its Adam step before the next weighting is formed.

On a stream both meta-losses are "the next batch's loss after the previous update": the
algorithms differ only in whether θ's step lands before (Alg 2) or after (Alg 1) the next
weighting is computed. That is why thesis Table 2 shows near-identical columns.

Baselines: ``adam``, ``sgd`` and ``hg`` (per-element hypergradient step sizes) as torch
optimizers on T.

Selection: a seeded, class-stratified ``val_fraction`` (default 10%) of the train split is held
out from training (``split_validation``). After every epoch T is scored on it and on the test
split; the epoch with the best validation accuracy is *selected*, and its test accuracy/loss is
the honest result (``RepResult.selected``). The thesis reported the best test accuracy/loss over
epochs (selection on the test set); that is kept as ``best_accuracy``/``best_loss`` for comparison
with its tables, beside the final epoch's. ``val_fraction=0`` trains on the whole train split
and reports only the latter two.

Resume: with an output folder, ``last.pt`` records the run at its start and after every epoch;
SIGINT/SIGTERM stops it with ``last.pt`` holding the start of the current epoch, and
``train_classic(..., resume=True)`` reaches exactly the uninterrupted run's results and M (the
latest update's graph, which the next batch's meta-gradient runs through, is recomputed from the
inputs the checkpoint keeps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from gwnmo_meta import defaults
from gwnmo_meta.config import check_base, check_positive, check_seed
from gwnmo_meta.errors import CheckpointError, ConfigError
from gwnmo_meta.registry import DEFAULT_METHOD, METHODS, SCHEDULES, WEIGHTINGS, MethodInfo

OPTIMIZERS = METHODS.names(lambda m: m.classic)  # the methods ``train --optimizer`` accepts
VAL_FRACTION = defaults.CLASSIC_VAL_FRACTION  # share of each class held out to select the epoch


@dataclass
class ClassicConfig:
    """Options of ``gwnmo-meta train``."""

    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = False
    skip_integrity_check: bool = False
    backbone: str = "conv4"
    optimizer: str = DEFAULT_METHOD
    schedule: str = "alg1"
    weighting: str = "mlp"
    lr: float | None = None
    meta_lr: float = defaults.CLASSIC_META_LR.value
    hg_beta: float = defaults.CLASSIC_HG_BETA.value
    epochs: int = 5
    batch_size: int = 64
    hidden: int = 64
    reps: int = 1
    weighting_from: str | None = None
    freeze_weighting: bool = False
    max_train_images: int | None = None
    device: str = "auto"
    seed: int = 0
    val_fraction: float = VAL_FRACTION
    base: str = "grad"  # GWNMO's base direction: grad (the thesis), momentum or adam
    base_momentum: float = defaults.BASE_MOMENTUM.value  # momentum's μ, Adam's β1
    base_beta2: float = defaults.BASE_BETA2.value  # Adam's β2

    @property
    def info(self) -> MethodInfo:
        """The registry's facts about ``optimizer``."""
        return METHODS[self.optimizer]

    def validate(self) -> ClassicConfig:
        """Check names against the registry and the counts and step sizes; returns ``self``."""
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if not SCHEDULES.check(self.schedule).classic:
            classic = ", ".join(SCHEDULES.names(lambda s: s.classic))
            raise ConfigError(
                f"--schedule {self.schedule} is not for classic training; choose {classic}"
            )
        WEIGHTINGS.check(self.weighting)
        for name in ("epochs", "batch_size", "hidden", "reps"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}"
                )
        for name in ("meta_lr", "hg_beta"):
            check_positive(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.lr is not None:
            check_positive("--lr", self.lr)
        check_seed("--seed", self.seed)
        if self.max_train_images is not None and self.max_train_images <= 0:
            raise ConfigError(f"--max-train-images must be positive, got {self.max_train_images}")
        if not 0 <= self.val_fraction < 1:  # also refuses NaN
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if not self.info.learned_optimizer and (self.weighting_from or self.freeze_weighting):
            raise ConfigError(
                "--weighting-from/--freeze-weighting need --optimizer gwnmo or gwnmo-prime"
            )
        if self.freeze_weighting and not self.weighting_from:
            raise ConfigError("--freeze-weighting needs --weighting-from CHECKPOINT")
        check_base(
            self.base,
            self.base_momentum,
            self.base_beta2,
            self.info.learned_optimizer,
            f"--optimizer {self.optimizer}",
        )
        return self

    @property
    def step_size(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.base in defaults.CLASSIC_BASE_LR:  # GWNMO over a base: the classic scan's choice
            return defaults.CLASSIC_BASE_LR[self.base].value
        tuned = METHODS.check(self.optimizer, "--optimizer").classic_lr  # MethodInfo.classic_lr
        if tuned is None:
            raise ConfigError(f"--optimizer {self.optimizer} has no default step size; give --lr")
        return tuned.value


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    test_accuracy: float
    test_loss: float
    val_accuracy: float | None = None  # None without a validation split
    val_loss: float | None = None


@dataclass
class RepResult:
    """One target trained from scratch."""

    rep: int
    epochs: list[EpochRecord] = field(default_factory=list)

    @property
    def selected(self) -> EpochRecord | None:
        """The epoch with the best validation accuracy (ties: lower val loss, then earlier); None without val."""
        scored = [e for e in self.epochs if e.val_accuracy is not None]
        if not scored:
            return None
        return max(scored, key=lambda e: (e.val_accuracy, -e.val_loss, -e.epoch))

    @property
    def best_accuracy(self) -> float:
        """Best test accuracy over epochs (selected on the test set: the thesis's practice)."""
        return max(e.test_accuracy for e in self.epochs)

    @property
    def best_loss(self) -> float:
        """Lowest test loss over epochs (the thesis's practice)."""
        return min(e.test_loss for e in self.epochs)

    @property
    def final(self) -> EpochRecord:
        return self.epochs[-1]

    def to_dict(self) -> dict[str, Any]:
        """Selected (by val), best-test (thesis practice) and final results, and every epoch."""
        sel = self.selected
        return {
            "rep": self.rep + 1,
            "selected_epoch": None if sel is None else sel.epoch,
            "selected_val_accuracy": None if sel is None else sel.val_accuracy,
            "test_accuracy_at_best_val": None if sel is None else sel.test_accuracy,
            "test_loss_at_best_val": None if sel is None else sel.test_loss,
            "best_test_accuracy": self.best_accuracy,
            "best_test_loss": self.best_loss,
            "final_test_accuracy": self.final.test_accuracy,
            "final_test_loss": self.final.test_loss,
            "epochs": [dataclasses.asdict(e) for e in self.epochs],
        }

    def summary(self) -> str:
        """One line: test at the val-selected epoch, best test over epochs, final."""
        sel = self.selected
        picked = (
            "no validation split"
            if sel is None
            else f"test {100 * sel.test_accuracy:.2f}% / {sel.test_loss:.4f} at epoch {sel.epoch} "
            f"(best val accuracy {100 * sel.val_accuracy:.2f}%)"
        )
        return (
            f"{picked}; best test over epochs (thesis practice) {100 * self.best_accuracy:.2f}% / "
            f"{self.best_loss:.4f}; final {100 * self.final.test_accuracy:.2f}% / "
            f"{self.final.test_loss:.4f}"
        )


def split_validation(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Hold out a seeded ``fraction`` of each class's examples for validation.

    Args:
        labels: Class ids of the train split, shape [N].
        fraction: Share of each class held out (rounded per class), in [0, 1).
        seed: Seed of the draw (independent of torch's global random state).

    Returns:
        (train indices, validation indices): sorted, disjoint, together all of ``range(N)``.
    """
    labels = labels.cpu()
    gen = torch.Generator().manual_seed(seed)
    keep, held = [torch.zeros(0, dtype=torch.int64)], [torch.zeros(0, dtype=torch.int64)]
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = int(round(fraction * len(idx)))
        held.append(idx[:n_val])
        keep.append(idx[n_val:])
    train, val = torch.cat(keep).sort().values, torch.cat(held).sort().values
    if len(train) == 0:
        raise ConfigError(f"--val-fraction {fraction} leaves no training images")
    return train, val


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

    def _loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(self.target, params, (x,)), y)

    def _update(
        self,
        params: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        theta: dict[str, Tensor] | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """φ' = φ − αΔ(θ') from φ (detached), differentiable in a fresh snapshot θ' of M's
        parameters (or of ``theta``). Returns (φ', loss at φ)."""
        self.last = ({n: p.detach() for n, p in params.items()}, x, y)
        self._base_before = self.base_state  # Base.steps is pure: these dicts stay as they are
        leaf = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        loss = self._loss(leaf, x, y)
        grads = torch.autograd.grad(loss, [leaf[n] for n in self.names])
        plist = [leaf[n].detach() for n in self.names]
        glist = [g.detach() for g in grads]
        states, ulist, base_inputs = self.base.steps(
            [self.base_state.get(n, {}) for n in self.names], glist
        )
        self.base_state = {n: st for n, st in zip(self.names, states, strict=True) if st}
        self.snapshot = {
            n: (p if theta is None else theta[n]).detach().clone().requires_grad_(p.requires_grad)
            for n, p in self.weighting.named_parameters()
        }
        kwargs = {} if base_inputs is None else {"state": base_inputs}
        raw = functional_call(self.weighting, self.snapshot, (x, plist, glist), kwargs)
        h = [torch.sigmoid(r) for r in raw] if self.normalize else list(raw)
        delta = self.direction(ulist, h, normalize=self.normalize)
        new = {
            n: p - self.cfg.step_size * d for n, p, d in zip(self.names, plist, delta, strict=False)
        }
        return new, loss.detach()

    def _meta_grads(self, x: Tensor, y: Tensor) -> list[Tensor | None] | None:
        """∇_{θ'} L(φ_t; X_t) through the latest update (None before the first update or when M is frozen)."""
        if self.meta_opt is None or self.snapshot is None:
            return None
        loss = self._loss(self.params, x, y)
        keys = [n for n, p in self.snapshot.items() if p.requires_grad]
        grads = torch.autograd.grad(loss, [self.snapshot[n] for n in keys], allow_unused=True)
        by_name = dict(zip(keys, grads, strict=False))
        return [by_name.get(n) for n, _ in self.weighting.named_parameters()]

    def _apply(self, grads: list[Tensor | None] | None) -> None:
        if grads is None or self.meta_opt is None:
            return
        for p, g in zip(self.weighting.parameters(), grads, strict=False):
            p.grad = None if g is None else g.detach()
        self.meta_opt.step()

    def step(self, x: Tensor, y: Tensor) -> float:
        """Consume one mini-batch; returns the target's loss on it (before its update)."""
        grads = self._meta_grads(x, y)  # this batch judges the previous update
        if self.cfg.schedule == "alg2":
            self._apply(grads)  # θ moves first, the new weighting uses it
            self.params, loss = self._update(self.params, x, y)
        else:
            self.params, loss = self._update(self.params, x, y)  # weighting with θ_t
            self._apply(grads)  # then θ_{t+1} = θ_t − β∇_θ L
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


def _copy_state(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-tensor base states, detached (a checkpoint holds no graph)."""
    return {
        n: {k: v.detach() if isinstance(v, Tensor) else v for k, v in st.items()}
        for n, st in state.items()
    }


def _load_features(
    cfg: ClassicConfig, device: torch.device, progress: bool, expect_data: str | None = None
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], str]:
    from gwnmo_meta.tasks.fewshot import load_classic_data

    return load_classic_data(
        dataset=cfg.dataset,
        data_root=cfg.data_root,
        download=cfg.download,
        skip_integrity_check=cfg.skip_integrity_check,
        backbone=cfg.backbone,
        seed=cfg.seed,
        device=device,
        progress=progress,
        expect_data=expect_data,
    )


CLASSIC_ARTEFACTS = ("results.json", "weighting.pt", "last.pt", "events.out.tfevents.*")
# ClassicConfig fields a resumed run may change (they do not alter what is computed)
RESUMABLE_CHANGES = {"device", "data_root", "download"}


def train_classic(
    cfg: ClassicConfig,
    out: Path | None = None,
    *,
    progress: bool = True,
    features: tuple | None = None,
    resume: bool = False,
    allow_data_change: bool = False,
) -> list[RepResult]:
    """Train ``cfg.reps`` fresh targets in sequence (M persists across them).

    With ``out``, ``last.pt`` records the run at its start and after every epoch. SIGINT or
    SIGTERM stops the run (``KeyboardInterrupt``, its ``signum`` attribute naming the signal)
    with ``last.pt`` holding the start of the current epoch; ``resume`` continues from it and
    reaches exactly the uninterrupted run's results and M.

    Args:
        cfg: the options (validated here, before anything is loaded or written).
        out: folder for TensorBoard events, ``results.json``, M's ``weighting.pt`` and
            ``last.pt``; locked for the whole run and refused if it already holds a run, unless
            ``resume`` (``None``: write nothing).
        progress: show progress bars.
        features: precomputed ``(x_train, y_train, x_test, y_test)`` (default: load them).
        resume: continue the run in ``out`` from its ``last.pt`` (same options, except
            ``RESUMABLE_CHANGES``).
        allow_data_change: resume even if the data differ from the run's (fingerprint).

    Returns:
        One :class:`RepResult` per rep.
    """
    from gwnmo_meta.device import resolve_device
    from gwnmo_meta.io.atomic import remove_stale_temps
    from gwnmo_meta.io.checkpoint import KIND_CLASSIC_RUN, load_checkpoint
    from gwnmo_meta.io.interrupts import Interrupts
    from gwnmo_meta.io.runlock import RunFolderLost, RunLock, remove_if_empty
    from gwnmo_meta.memory import check_classic
    from gwnmo_meta.training.trainer import check_writable

    cfg.validate()
    device = resolve_device(cfg.device)
    check_classic(cfg, device)  # what cannot fit in memory is refused before any work
    # a bad --weighting-from is refused before any data is loaded or anything is written
    start_state = load_weighting_state(cfg.weighting_from) if cfg.weighting_from else None
    if cfg.weighting_from:
        from gwnmo_meta.optim.pretrained import weighting_base

        trained = weighting_base(cfg.weighting_from)
        if trained != cfg.base:
            raise ConfigError(
                f"the weighting network in {cfg.weighting_from} was trained over --base {trained}; "
                f"give --base {trained}"
            )
    if out is None:
        if resume:
            raise ConfigError("resume needs the run's folder (--out)")
        return _ClassicRun(cfg, None, device, progress).train(start_state, features)
    out = Path(out)
    if resume and not (out / "last.pt").is_file():
        raise ConfigError(f"--resume: no checkpoint to resume in {out} (expected last.pt)")
    created = not out.exists()
    check_writable(out)
    interrupts = Interrupts()  # from here on SIGTERM, like SIGINT, unwinds (releasing the lock)
    try:
        with interrupts, RunLock(out) as lock:
            remove_stale_temps(out)
            ckpt = None
            if resume:
                ckpt = load_checkpoint(out / "last.pt", KIND_CLASSIC_RUN)
                _check_resume(cfg, ckpt)
            else:
                found = sorted({p.name for pattern in CLASSIC_ARTEFACTS for p in out.glob(pattern)})
                if found:
                    raise ConfigError(
                        f"{out} already holds a run ({', '.join(found)}); pass --resume to "
                        "continue it or choose another --out"
                    )
            run = _ClassicRun(cfg, out, device, progress, lock=lock, interrupts=interrupts)
            results = run.train(start_state, features, ckpt, allow_data_change)
            lock.verify()
            write_results(out / "results.json", cfg, results)
            return results
    except BaseException as exc:
        # refused or failed before writing anything: leave no trace (but a folder that replaced
        # ours is someone else's)
        if created and not isinstance(exc, RunFolderLost):
            remove_if_empty(out)
        raise


def _check_resume(cfg: ClassicConfig, ckpt: dict[str, Any]) -> None:
    saved = ckpt["config"]
    diff = [
        k
        for k, v in dataclasses.asdict(cfg).items()
        if k not in RESUMABLE_CHANGES and saved.get(k) != v
    ]
    if diff:
        raise ConfigError(
            "--resume with options that differ from the checkpoint's: "
            + ", ".join(
                f"{k} (checkpoint {saved.get(k)!r}, given {getattr(cfg, k)!r})" for k in diff
            )
        )


def write_results(path: Path, cfg: ClassicConfig, results: list[RepResult]) -> None:
    """``results.json``: the config, the step size and, per rep, val-selected/best/final metrics and every epoch."""
    from gwnmo_meta.io.atomic import atomic_write_json

    summary = {
        "config": dataclasses.asdict(cfg),
        "step_size": cfg.step_size,
        "reps": [r.to_dict() for r in results],
    }
    atomic_write_json(path, summary)


class _ClassicRun:
    """One classic training run: its data, M, task stream, checkpoints and resume.

    A checkpoint records the position to continue from (``rep``, epochs done in it), the results
    so far, M and its Adam state, the current target's learner (``None`` at a rep's start: the
    target is then built anew, from the restored RNG state), the batch-order generator, the
    global RNG states and the data fingerprint.
    """

    def __init__(
        self,
        cfg: ClassicConfig,
        out: Path | None,
        device: torch.device,
        progress: bool,
        *,
        lock: Any = None,
        interrupts: Any = None,
    ) -> None:
        self.cfg, self.out, self.device, self.progress = cfg, out, device, progress
        self.lock, self.interrupts = lock, interrupts
        self.weighting: nn.Module | None = None
        self.meta_opt: torch.optim.Optimizer | None = None
        self.results: list[RepResult] = []
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.fingerprint: str | None = None

    def _critical(self) -> Any:
        return self.interrupts.critical() if self.interrupts else contextlib.nullcontext()

    def _learner(
        self, xdim: int, classes: int, start_state: dict[str, Tensor] | None
    ) -> tuple[nn.Module, OnlineGWNMO | _TorchLearner]:
        """A fresh target (and, the first time, M) and its learner."""
        cfg = self.cfg
        target = make_target(xdim, cfg.hidden, classes).to(self.device)
        if not cfg.info.learned_optimizer:
            return target, _TorchLearner(target, cfg)
        if self.weighting is None:
            self.weighting, self.meta_opt = _build_weighting(
                cfg, target, xdim, self.device, start_state
            )
        return target, OnlineGWNMO(target, self.weighting, cfg, self.meta_opt)

    def _restore(self, ckpt: dict[str, Any], xdim: int, classes: int) -> tuple[int, int, Any, Any]:
        from gwnmo_meta.io.checkpoint import restore_rng_states

        dev = self.device
        try:
            self.results = [
                RepResult(r["rep"], [EpochRecord(**e) for e in r["epochs"]]) for r in ckpt["reps"]
            ]
            self.gen.set_state(ckpt["generator"])
            target = learner = None
            if ckpt["weighting"] is not None:
                _, _ = self._learner(xdim, classes, ckpt["weighting"])
                if self.meta_opt is not None and ckpt["meta_optimizer"] is not None:
                    self.meta_opt.load_state_dict(ckpt["meta_optimizer"])
            if ckpt["learner"] is not None:
                target, learner = self._learner(xdim, classes, None)
                learner.load_state_dict(_to(ckpt["learner"], dev))
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(
                f"checkpoint {self.out / 'last.pt'} does not fit this run ({type(exc).__name__})"
            ) from None
        restore_rng_states(ckpt["rng"])  # as it was right after the checkpointed state was built
        return ckpt["rep"], ckpt["epoch"], target, learner

    def checkpoint(self, rep: int, epoch: int, learner: Any) -> None:
        """Write ``last.pt``: continue at epoch ``epoch`` of rep ``rep`` (``learner``: its state)."""
        from gwnmo_meta.io.checkpoint import (
            KIND_CLASSIC_RUN,
            NonFiniteCheckpoint,
            rng_states,
            save_checkpoint,
        )

        if self.out is None:
            return
        if self.lock is not None:
            self.lock.verify()  # never write into a folder deleted or replaced under the run
        payload = {
            "kind": KIND_CLASSIC_RUN,
            "config": dataclasses.asdict(self.cfg),
            "rep": rep,
            "epoch": epoch,
            "reps": [
                {"rep": r.rep, "epochs": [dataclasses.asdict(e) for e in r.epochs]}
                for r in self.results
            ],
            "weighting": None if self.weighting is None else self.weighting.state_dict(),
            "meta_optimizer": None if self.meta_opt is None else self.meta_opt.state_dict(),
            "learner": None if learner is None else learner.state_dict(),
            "generator": self.gen.get_state(),
            "rng": rng_states(),
            "data_fingerprint": self.fingerprint,
        }
        try:
            save_checkpoint(self.out / "last.pt", payload, create_parent=False)
        except NonFiniteCheckpoint:
            raise ConfigError(
                "the target or the weighting network M became non-finite (NaN/Inf); last.pt "
                "keeps the last good epoch (try a smaller --lr or --meta-lr)"
            ) from None

    def train(
        self,
        start_state: dict[str, Tensor] | None,
        features: tuple | None,
        ckpt: dict[str, Any] | None = None,
        allow_data_change: bool = False,
    ) -> list[RepResult]:
        cfg, device, progress, out = self.cfg, self.device, self.progress, self.out
        if features is None:
            expect = None if ckpt is None or allow_data_change else ckpt.get("data_fingerprint")
            features, self.fingerprint = _load_features(cfg, device, progress, expect)
        xtr, ytr, xte, yte = features
        torch.manual_seed(cfg.seed)  # after feature loading, which may pre-train a backbone
        xtr, ytr, xte, yte = (t.to(device) for t in (xtr, ytr, xte, yte))
        if cfg.max_train_images is not None:
            xtr, ytr = xtr[: cfg.max_train_images], ytr[: cfg.max_train_images]
        xva = yva = None
        if cfg.val_fraction > 0:
            tr_idx, va_idx = (
                i.to(device) for i in split_validation(ytr, cfg.val_fraction, cfg.seed)
            )
            xva, yva, xtr, ytr = xtr[va_idx], ytr[va_idx], xtr[tr_idx], ytr[tr_idx]
        classes = int(max(ytr.max(), yte.max())) + 1
        rep0, epoch0, target, learner = 0, 0, None, None
        if ckpt is not None:
            rep0, epoch0, target, learner = self._restore(ckpt, xtr.shape[1], classes)
        elif out is not None:
            with self._critical():
                self.checkpoint(0, 0, None)  # an interrupted run always leaves a last.pt
        writer = None
        if out is not None:
            from gwnmo_meta.training.tblog import summary_writer

            writer = summary_writer(out)
        try:
            for rep in range(rep0, cfg.reps):
                if learner is None:
                    target, learner = self._learner(xtr.shape[1], classes, start_state)
                    self.results.append(RepResult(rep))
                result = self.results[rep]
                for epoch in range(epoch0 if rep == rep0 else 0, cfg.epochs):
                    order = torch.randperm(len(xtr), generator=self.gen).to(device)
                    losses = []
                    batches = range(0, len(xtr), cfg.batch_size)
                    for i in tqdm(
                        batches,
                        desc=f"rep {rep + 1}/{cfg.reps} epoch {epoch + 1}/{cfg.epochs}",
                        disable=not progress,
                        leave=False,
                        dynamic_ncols=True,
                    ):
                        idx = order[i : i + cfg.batch_size]
                        loss = learner.step(xtr[idx], ytr[idx])
                        if not math.isfinite(loss):
                            raise ConfigError(
                                f"training loss became {loss} (rep {rep + 1}, "
                                f"epoch {epoch + 1}); try a smaller --lr or --meta-lr"
                            )
                        losses.append(loss)
                    params = learner.current()
                    acc, tloss = evaluate_target(target, params, xte, yte)
                    rec = EpochRecord(epoch + 1, sum(losses) / len(losses), acc, tloss)
                    if xva is not None and len(xva):
                        rec.val_accuracy, rec.val_loss = evaluate_target(target, params, xva, yva)
                    last = epoch + 1 == cfg.epochs
                    with self._critical():  # the epoch's record, events and checkpoint together
                        if self.lock is not None:
                            self.lock.verify()  # not one event into a folder no longer ours
                        result.epochs.append(rec)
                        if writer is not None:
                            _log_epoch(writer, rep, rec, result if last else None)
                        if last:
                            self.checkpoint(rep + 1, 0, None)
                        else:
                            self.checkpoint(rep, epoch + 1, learner)
                learner = None
        finally:
            lost = self.lock is not None and not self.lock.held()
            if writer is not None:
                with contextlib.suppress(OSError) if lost else contextlib.nullcontext():
                    writer.close()
        if out is not None and self.weighting is not None:
            from gwnmo_meta.io.checkpoint import KIND_CLASSIC, NonFiniteCheckpoint, save_checkpoint

            if self.lock is not None:
                self.lock.verify()
            try:
                save_checkpoint(
                    out / "weighting.pt",
                    {
                        "kind": KIND_CLASSIC,
                        "config": dataclasses.asdict(cfg),
                        "weighting": self.weighting.state_dict(),
                    },
                )
            except NonFiniteCheckpoint:
                raise ConfigError(
                    "the weighting network M became non-finite (NaN/Inf); weighting.pt not written "
                    "(try a smaller --lr or --meta-lr)"
                ) from None
        return self.results


def _to(obj: Any, device: torch.device) -> Any:
    """``obj`` (nested dicts of tensors) with every tensor moved to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _log_epoch(writer: Any, rep: int, rec: EpochRecord, done: RepResult | None) -> None:
    """TensorBoard scalars of one epoch (and of its rep, when ``done``)."""
    tag = f"rep{rep + 1}"
    writer.add_scalar(f"{tag}/train_loss", rec.train_loss, rec.epoch)
    writer.add_scalar(f"{tag}/test_accuracy", rec.test_accuracy, rec.epoch)
    writer.add_scalar(f"{tag}/test_loss", rec.test_loss, rec.epoch)
    if rec.val_accuracy is not None:
        writer.add_scalar(f"{tag}/val_accuracy", rec.val_accuracy, rec.epoch)
        writer.add_scalar(f"{tag}/val_loss", rec.val_loss, rec.epoch)
    if done is not None:
        writer.add_scalar("reps/best_test_accuracy", done.best_accuracy, rep + 1)
        if done.selected is not None:
            writer.add_scalar(
                "reps/test_accuracy_at_best_val", done.selected.test_accuracy, rep + 1
            )


def _build_weighting(
    cfg: ClassicConfig,
    target: nn.Module,
    feature_dim: int,
    device: torch.device,
    state: dict[str, Tensor] | None = None,
):
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
    return weighting, torch.optim.Adam(weighting.parameters(), lr=cfg.meta_lr)


def _weighting_hint(cfg: ClassicConfig) -> str:
    """Why a --weighting-from M does not fit, from the kind and width the checkpoint's run used."""
    from gwnmo_meta.io.checkpoint import load_checkpoint

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


class _TorchLearner:
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
