"""One classic training run (``gwnmo-meta train``): its data, reps and epochs, checkpoints and
TensorBoard events, and the results it reports (:class:`RepResult` per rep)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from gwnmo_meta.errors import CheckpointError, ConfigError
from gwnmo_meta.training.classic_learners import (
    OnlineGWNMO,
    TorchLearner,
    evaluate_target,
    make_target,
    make_weighting,
)

if TYPE_CHECKING:
    from gwnmo_meta.training.classic import ClassicConfig

# (x_train, y_train, x_test, y_test): the features of the train and test splits
Features = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    test_accuracy: float
    test_loss: float
    val_accuracy: float | None = None  # None without a validation split
    val_loss: float | None = None


def _by_validation(e: EpochRecord) -> tuple[float, float, int]:
    """An epoch's rank by validation: accuracy, then lower loss, then earlier."""
    assert e.val_accuracy is not None and e.val_loss is not None  # scored together
    return (e.val_accuracy, -e.val_loss, -e.epoch)


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
        return max(scored, key=_by_validation)

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
        picked = "no validation split"
        if sel is not None:
            assert sel.val_accuracy is not None  # selected among the epochs with a val score
            picked = (
                f"test {100 * sel.test_accuracy:.2f}% / {sel.test_loss:.4f} at epoch {sel.epoch} "
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


def load_features(
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


class ClassicRun:
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
    ) -> tuple[nn.Module, OnlineGWNMO | TorchLearner]:
        """A fresh target (and, the first time, M) and its learner."""
        cfg = self.cfg
        target = make_target(xdim, cfg.hidden, classes).to(self.device)
        if not cfg.info.learned_optimizer:
            return target, TorchLearner(target, cfg)
        if self.weighting is None:
            self.weighting, self.meta_opt = make_weighting(
                cfg, target, xdim, self.device, start_state
            )
        return target, OnlineGWNMO(target, self.weighting, cfg, self.meta_opt)

    def _restore(
        self, ckpt: dict[str, Any], xdim: int, classes: int
    ) -> tuple[int, int, nn.Module | None, OnlineGWNMO | TorchLearner | None]:
        from gwnmo_meta.io.checkpoint import restore_rng_states

        assert self.out is not None  # a run resumes from its folder's last.pt
        dev = self.device
        try:
            self.results = [
                RepResult(r["rep"], [EpochRecord(**e) for e in r["epochs"]]) for r in ckpt["reps"]
            ]
            self.gen.set_state(ckpt["generator"])
            target: nn.Module | None = None
            learner: OnlineGWNMO | TorchLearner | None = None
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
        features: Features | None,
        ckpt: dict[str, Any] | None = None,
        allow_data_change: bool = False,
    ) -> list[RepResult]:
        """Train the reps (from ``ckpt`` when resuming), then save M's ``weighting.pt``.

        Args:
            start_state: M's parameters to start from (``--weighting-from``), or ``None``.
            features: precomputed features (default: load them).
            ckpt: the run's ``last.pt`` to continue, or ``None``.
            allow_data_change: resume even if the data differ from the run's (fingerprint).

        Returns:
            One :class:`RepResult` per rep.
        """
        cfg, out = self.cfg, self.out
        data = self._data(features, ckpt, allow_data_change)
        xtr, ytr, _, _, xte, yte = data
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
                assert target is not None  # restored or built with its learner
                for epoch in range(epoch0 if rep == rep0 else 0, cfg.epochs):
                    self._epoch(rep, epoch, target, learner, data, writer)
                learner = None
        finally:
            lost = self.lock is not None and not self.lock.held()
            if writer is not None:
                with contextlib.suppress(OSError) if lost else contextlib.nullcontext():
                    writer.close()
        if out is not None and self.weighting is not None:
            self._save_weighting(out, self.weighting)
        return self.results

    def _data(
        self, features: Features | None, ckpt: dict[str, Any] | None, allow_data_change: bool
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
        """(train x, y, validation x, y, test x, y) on the device (validation ``None`` without a
        validation split); seeds torch's global RNG once the features are loaded."""
        cfg, device = self.cfg, self.device
        if features is None:
            expect = None if ckpt is None or allow_data_change else ckpt.get("data_fingerprint")
            features, self.fingerprint = load_features(cfg, device, self.progress, expect)
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
        return xtr, ytr, xva, yva, xte, yte

    def _epoch(
        self,
        rep: int,
        epoch: int,
        target: nn.Module,
        learner: OnlineGWNMO | TorchLearner,
        data: tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor, Tensor],
        writer: Any,
    ) -> None:
        """Epoch ``epoch`` of rep ``rep``: the mini-batches, the scores, the record and last.pt."""
        cfg, result = self.cfg, self.results[rep]
        xtr, ytr, xva, yva, xte, yte = data
        order = torch.randperm(len(xtr), generator=self.gen).to(self.device)
        losses = []
        batches = range(0, len(xtr), cfg.batch_size)
        for i in tqdm(
            batches,
            desc=f"rep {rep + 1}/{cfg.reps} epoch {epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
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
        if xva is not None and yva is not None and len(xva):
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

    def _save_weighting(self, out: Path, weighting: nn.Module) -> None:
        """M's ``out/weighting.pt`` at the end of the run (refused if M became non-finite)."""
        from gwnmo_meta.io.checkpoint import KIND_CLASSIC, NonFiniteCheckpoint, save_checkpoint

        if self.lock is not None:
            self.lock.verify()
        try:
            save_checkpoint(
                out / "weighting.pt",
                {
                    "kind": KIND_CLASSIC,
                    "config": dataclasses.asdict(self.cfg),
                    "weighting": weighting.state_dict(),
                },
            )
        except NonFiniteCheckpoint:
            raise ConfigError(
                "the weighting network M became non-finite (NaN/Inf); weighting.pt not written "
                "(try a smaller --lr or --meta-lr)"
            ) from None


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
