"""The meta-training loop: episodes → meta-loss → Adam on θ, with validation, checkpoints and TensorBoard.

RUN_DIR layout::

    config.json      the resolved RunConfig
    last.pt          checkpoint after the latest validation (or interruption); ``--resume`` continues it
    best.pt          checkpoint with the best meta-val accuracy so far
    events.out.tfevents.*   TensorBoard scalars, histograms and the hparams summary
    .gwnmo-meta.lock the run's exclusive lock (removed when the run ends)

The loop is split into phases (:class:`MetaTrainer`): :meth:`~MetaTrainer.restore` (from a
checkpoint), :meth:`~MetaTrainer.meta_step` (episodes, meta-loss, backward: changes nothing but the
task stream), :meth:`~MetaTrainer.apply_step` (meta-optimizer step and bookkeeping) and
:meth:`~MetaTrainer.validate_and_checkpoint`. Resume guarantee: SIGINT or SIGTERM at any point
saves ``last.pt`` at the end of the latest completed phase (``apply_step`` and the checkpoint
writes hold signals back until they finish), and ``--resume`` from it reaches exactly the state
of the uninterrupted run: same parameters, optimizer state, task stream, RNG states, history and
best checkpoint. A meta-step cut off midway is redone; a validation cut off midway is redone
first thing on resume. A run killed outright (SIGKILL, power cut, full disk) between writing
``best.pt`` and ``last.pt`` resumes from ``best.pt``, the newer of the two (with a warning).

A resumed run checks that its data are those it was trained on (the data fingerprint stored in
its checkpoints; ``allow_data_change`` skips that). A run stops (``RunFolderLost``, exit 1)
if its folder or lock file is deleted or replaced under it, checked before every meta-step and
checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from gwnmo_meta.config import RunConfig
from gwnmo_meta.device import resolve_device
from gwnmo_meta.errors import CheckpointError, ConfigError
from gwnmo_meta.evaluation.evaluate import EvalSummary, evaluate_tasks
from gwnmo_meta.io.atomic import atomic_write_bytes, remove_stale_temps
from gwnmo_meta.io.checkpoint import (
    KIND_META,
    load_checkpoint,
    non_finite_tensors,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from gwnmo_meta.io.interrupts import Interrupts
from gwnmo_meta.io.runlock import RunFolderLost, RunLock, remove_if_empty
from gwnmo_meta.memory import check_meta_train
from gwnmo_meta.registry import METHODS
from gwnmo_meta.training import distributed
from gwnmo_meta.training.run_data import build_method_for, load_run_data, task_spec
from gwnmo_meta.training.run_folder import (
    PROBE_NAME,
    RESUMABLE_CHANGES,
    RUN_ARTEFACTS,
    check_not_run_file,
    check_writable,
    restartable,
    resume_checkpoint,
    resume_config,
    run_artefacts,
)
from gwnmo_meta.training.tblog import RunLogger

# the run folder's names, importable from here (cli/app.py, tests)
__all__ = [
    "PROBE_NAME",
    "RESUMABLE_CHANGES",
    "RUN_ARTEFACTS",
    "LoopState",
    "MetaTrainer",
    "TrainResult",
    "TrainingDiverged",
    "check_not_run_file",
    "check_writable",
    "meta_train",
    "resume_checkpoint",
    "run_artefacts",
]


class TrainingDiverged(Exception):
    """The meta-loss or the meta-parameters became NaN/Inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports (``signal``: what interrupted it, if known)."""

    run_dir: Path
    steps_done: int
    best_val_accuracy: float | None
    last_val: EvalSummary | None
    interrupted: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    signal: int | None = None


@dataclass
class LoopState:
    """Where a run stands, besides its model and optimizer; a checkpoint records all of it.

    ``stream`` is the (train sampler state, global RNG states) at the end of meta-step ``step``;
    ``pending`` the record of meta-step ``step`` while its validation has not run yet.
    """

    step: int = 0
    best_val_accuracy: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    pending: dict[str, float] | None = None
    stream: tuple[dict[str, Any], dict[str, Any]] | None = None


class MetaTrainer:
    """One meta-training run's live objects and its phases (see the module docstring).

    Args:
        cfg: the validated run configuration.
        out: RUN_DIR (exists, locked by the caller).
        device: where the method runs.
        progress: show progress bars.
        hist_every: log histograms every this many meta-steps.
        check_test: also check up front that the meta-test part can supply ``cfg``'s tasks.
        interrupts: the run's signal handling (default: a fresh :class:`Interrupts`).
        expect_data: the data fingerprint the run must find (a resumed run's; ``None``: any).
        lock: the run folder's lock, verified before each checkpoint (rank 0).
    """

    def __init__(
        self,
        cfg: RunConfig,
        out: Path,
        device: torch.device,
        *,
        progress: bool = True,
        hist_every: int = 100,
        check_test: bool = False,
        interrupts: Interrupts | None = None,
        expect_data: str | None = None,
        lock: RunLock | None = None,
    ) -> None:
        self.cfg, self.out, self.device = cfg, out, device
        self.progress, self.hist_every = progress, hist_every
        self.world = distributed.world()
        self.lock = lock
        with distributed.main_first():  # one rank per node fills the feature cache first
            self.data = load_run_data(cfg, device, progress=progress, expect_data=expect_data)
        self.spec = task_spec(cfg)
        # every part the run will draw from must supply the requested tasks: check before training
        self.val_sampler = self.data.sampler("val", self.spec, cfg.seed + 1, device)
        self.val_start = self.val_sampler.state_dict()  # same val tasks at every validation
        if check_test:
            self.data.sampler("test", self.spec, 0, device)
        torch.manual_seed(cfg.seed)  # after data loading, which may pre-train a backbone
        self.method = build_method_for(cfg, self.data.feature_dim, device)
        self.meta_opt = self.method.make_meta_optimizer()
        self.train_sampler = self.data.sampler("train", self.spec, cfg.seed, device)
        self.state = LoopState()
        self.interrupts = interrupts or Interrupts()
        self.log: RunLogger | distributed.NullLogger = distributed.NullLogger()  # run() opens it
        self.last_val: EvalSummary | None = None
        self._best_unsaved = False

    # ---- state ---------------------------------------------------------------------------------
    def capture_stream(self) -> None:
        """Record the task stream and RNG states as the end of the current meta-step."""
        self.state.stream = (self.train_sampler.state_dict(), rng_states())

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint (already checked by ``load_checkpoint``)."""
        path = self.out / "last.pt"
        try:
            self.method.load_state_dict(ckpt["method"])
            if self.meta_opt is not None and ckpt["meta_optimizer"] is not None:
                self.meta_opt.load_state_dict(ckpt["meta_optimizer"])
            self.train_sampler.load_state_dict(ckpt["sampler"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit this run's model ({type(exc).__name__})"
            ) from None
        restore_rng_states(ckpt["rng"])
        self.state = LoopState(
            step=ckpt["step"],
            best_val_accuracy=ckpt["best_val_accuracy"],
            history=list(ckpt["history"]),
            pending=ckpt.get("pending_validation"),
        )

    def payload(self) -> dict[str, Any]:
        """The checkpoint of the current state (stream and RNG as of the end of ``state.step``)."""
        assert self.state.stream is not None  # captured before the first meta-step
        sampler, rng = self.state.stream
        return {
            "kind": KIND_META,
            "config": self.cfg.to_dict(),
            "feature_dim": self.data.feature_dim,
            "method": self.method.state_dict(),
            "meta_optimizer": None if self.meta_opt is None else self.meta_opt.state_dict(),
            "sampler": sampler,
            "rng": rng,
            "step": self.state.step,
            "best_val_accuracy": self.state.best_val_accuracy,
            "history": self.state.history,
            "pending_validation": self.state.pending,
            "world_size": self.world.world_size,  # information only: any world size may resume
            "data_fingerprint": self.data.fingerprint,  # a resume on other data is refused
        }

    def check_finite(self, meta_loss: float) -> None:
        """Raise ``TrainingDiverged`` if the meta-parameters or optimizer state hold NaN/Inf."""
        bad = non_finite_tensors(dict(self.method.named_parameters()))
        if self.meta_opt is not None:
            bad += non_finite_tensors(self.meta_opt.state_dict()["state"], "optimizer state")
        if bad:
            raise TrainingDiverged(
                f"the meta-update of meta-step {self.state.step + 1} made {', '.join(bad[:3])} "
                f"non-finite (meta-loss {meta_loss:.4g}); {self._last_good()}"
            )

    def _last_good(self) -> str:
        last = self.out / "last.pt"
        kept = (
            f"the last good checkpoint is {last}"
            if last.is_file()
            else "no checkpoint was written (it diverged before the first validation)"
        )
        return f"stopped, {kept} (try a smaller --meta-lr or --inner-lr)"

    # ---- phases --------------------------------------------------------------------------------
    def meta_step(self) -> tuple[float, list[Any], list[float]]:
        """Episodes, meta-loss and its backward for meta-step ``state.step + 1``.

        Changes nothing but the task stream and gradients, so it may be cut off at any point.

        Returns:
            (mean meta-loss, the episodes' outcomes, the back-propagated losses).
        """
        cfg, method, world = self.cfg, self.method, self.world
        if self.meta_opt is not None:
            self.meta_opt.zero_grad(set_to_none=True)
        lo, hi = world.task_slice(cfg.meta_batch)  # this rank's global task indices (all of them)
        episodes = distributed.draw_share(self.train_sampler, cfg.meta_batch, lo, hi)
        if method.task_batched:  # the meta-batch's tasks in one task-batched inner loop
            batch_loss, outcomes = method.episodes(episodes, train=True)
            meta_losses = [] if batch_loss is None else [float(batch_loss.detach())]
            if batch_loss is not None and world.active:  # this rank's share of the global mean
                batch_loss = batch_loss * ((hi - lo) / cfg.meta_batch)
                meta_losses = [meta_losses[0] * (hi - lo)]  # sum over this rank's tasks
            if batch_loss is not None:
                batch_loss.backward()
        else:  # one task at a time, each graph freed after its backward
            outcomes = []
            for ep in episodes:
                outcome = method.episode(ep, train=True)
                if outcome.meta_loss is not None:
                    (outcome.meta_loss / cfg.meta_batch).backward()
                outcomes.append(outcome)
            meta_losses = [float(o.meta_loss.detach()) for o in outcomes if o.meta_loss is not None]
        meta_loss = sum(meta_losses) / len(meta_losses) if meta_losses else float("nan")
        if meta_losses and world.active:  # sum the meta-gradients and task losses over ranks
            assert self.meta_opt is not None, "meta-losses to sum, but nothing is meta-learned"
            params = [p for g in self.meta_opt.param_groups for p in g["params"]]
            (loss_sum,) = distributed.all_reduce_grads(params, sum(meta_losses))
            meta_loss = loss_sum / cfg.meta_batch
        if meta_losses and not math.isfinite(meta_loss):
            raise TrainingDiverged(
                f"meta-loss became {meta_loss} at meta-step {self.state.step + 1}; "
                + self._last_good()
            )
        return meta_loss, outcomes, meta_losses

    def apply_step(
        self, meta_loss: float, outcomes: list[Any], meta_losses: list[float], seconds: float
    ) -> dict[str, float]:
        """Meta-optimizer step and bookkeeping of meta-step ``state.step + 1`` (run it critical)."""
        cfg = self.cfg
        if self.lock is not None:
            self.lock.verify()  # before the step's events go to a folder that is no longer ours
        if self.meta_opt is not None and meta_losses:
            self.meta_opt.step()
            self.check_finite(meta_loss)
        self.state.step += 1
        step = self.state.step
        tasks_per_s = cfg.meta_batch / max(seconds, 1e-9)
        record = self.log.train_step(
            step, outcomes, meta_loss, tasks_per_s, self.method.inner_lr(), self.meta_opt
        )
        if step % self.hist_every == 0 or step == cfg.meta_steps:
            self.log.histograms(step, self.method, outcomes)
        self.capture_stream()
        if self.validation_due(step):
            self.state.pending = record
        return record

    def validation_due(self, step: int) -> bool:
        return step % self.cfg.val_every == 0 or step == self.cfg.meta_steps

    def validate(self) -> EvalSummary:
        """Meta-val accuracy on the same ``val_tasks`` tasks every time; global RNGs untouched."""
        self.val_sampler.load_state_dict(self.val_start)
        rng = rng_states()
        try:
            return evaluate_tasks(
                self.method,
                self.val_sampler,
                self.cfg.val_tasks,
                progress=False,
                task_batch=self.cfg.meta_batch,
            )
        finally:
            restore_rng_states(rng)

    def validate_and_checkpoint(self) -> EvalSummary | None:
        """If meta-step ``state.step`` awaits validation: validate, then write best.pt/last.pt.

        The validation may be cut off (it is redone on resume); the bookkeeping and the
        checkpoint writes run with signals held back.
        """
        if self.state.pending is None:
            return None
        summary = self.validate()
        with self.interrupts.critical():
            record = {
                **self.state.pending,
                "val_accuracy": summary.accuracy.mean,
                "val_accuracy_ci95": summary.accuracy.ci95,
            }
            st = self.state
            st.history.append(record)
            st.pending = None
            if st.best_val_accuracy is None or summary.accuracy.mean > st.best_val_accuracy:
                st.best_val_accuracy = summary.accuracy.mean
                self._best_unsaved = True
            self.last_val = summary
            self.write_checkpoints()
            self.log.validation(st.step, summary)
        return summary

    def write_checkpoints(self) -> None:
        """best.pt (if the current state is a new best not yet saved), then last.pt (rank 0)."""
        if not self.world.is_main:
            self._best_unsaved = False
            return
        if self.lock is not None:
            self.lock.verify()  # never write into a folder deleted or replaced under the run
        payload = self.payload()
        if self._best_unsaved:
            save_checkpoint(self.out / "best.pt", payload, create_parent=False)
            self._best_unsaved = False
        save_checkpoint(self.out / "last.pt", payload, create_parent=False)

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, on_step: Callable[[int], None] | None = None) -> TrainResult:
        """Meta-train up to ``cfg.meta_steps``; on SIGINT/SIGTERM save last.pt and return."""
        cfg, st = self.cfg, self.state
        if st.stream is None:
            self.capture_stream()
        self.log = distributed.NullLogger()  # rank 0 writes the TensorBoard events
        if self.world.is_main:
            self.log = RunLogger(self.out, purge_step=st.step + 1 if st.step else None)
        interrupted = False
        bar = tqdm(
            total=cfg.meta_steps,
            initial=st.step,
            desc="meta-train",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            with self.interrupts:
                try:
                    self.validate_and_checkpoint()  # a validation cut off before the resume
                    while st.step < cfg.meta_steps:
                        t0 = time.perf_counter()
                        meta_loss, outcomes, losses = self.meta_step()
                        with self.interrupts.critical():
                            self.apply_step(meta_loss, outcomes, losses, time.perf_counter() - t0)
                        summary = self.validate_and_checkpoint()
                        post = {"meta_loss": f"{meta_loss:.3f}"}
                        if summary is not None:
                            post["val_acc"] = f"{summary.accuracy.mean:.3f}"
                        bar.set_postfix(post)
                        bar.update(1)
                        if on_step is not None:
                            on_step(st.step)
                except KeyboardInterrupt:
                    interrupted = True
                    with self.interrupts.critical(discard=True):
                        self.write_checkpoints()
                except distributed.RankFailure:  # keep the latest completed phase, as on Ctrl-C
                    with self.interrupts.critical(discard=True):
                        self.write_checkpoints()
                    raise
                except OSError:  # e.g. TensorBoard's writer, after the folder was deleted
                    if self.lock is not None:
                        self.lock.verify()
                    raise
        finally:
            bar.close()
            lost = self.lock is not None and not self.lock.held()
            with contextlib.suppress(OSError) if lost else contextlib.nullcontext():
                if not interrupted and not lost:
                    self.log.hparams(cfg, st.best_val_accuracy, self.last_val)
                self.log.close()
        signum = (self.interrupts.signum or 2) if interrupted else None
        return TrainResult(
            self.out,
            st.step,
            st.best_val_accuracy,
            self.last_val,
            interrupted,
            st.history,
            signum,
        )


def meta_train(
    cfg: RunConfig,
    out: Path,
    *,
    resume: bool | Literal["auto"] = False,
    progress: bool = True,
    hist_every: int = 100,
    on_step: Callable[[int], None] | None = None,
    check_test: bool = False,
    allow_data_change: bool = False,
) -> TrainResult:
    """Meta-train ``cfg.method`` on ``cfg.dataset``'s meta-train tasks, writing RUN_DIR ``out``.

    Args:
        cfg: the run configuration (validated here, before anything is loaded or written).
        out: RUN_DIR; locked for the whole run, refused if another process holds it.
        resume: continue ``out/last.pt`` (:func:`resume_checkpoint`); ``False`` refuses a folder
            holding run artefacts; ``"auto"`` resumes if a checkpoint exists, else starts afresh
            (discarding the config and events of a run cut off before its first checkpoint), as
            ``True`` does, with a warning, for a run folder holding a config.json but no checkpoint.
        progress: show progress bars.
        hist_every: histogram period in meta-steps.
        on_step: called with the step number after every meta-step (and its validation).
        check_test: also check up front that the meta-test part can supply the tasks.
        allow_data_change: resume even if the data differ from the run's (fingerprint).

    Returns:
        The :class:`TrainResult` (``interrupted`` after SIGINT/SIGTERM, with last.pt saved).

    Raises:
        ConfigError, DataError, CheckpointError: user mistakes, before training starts.
        TrainingDiverged: NaN/Inf meta-loss or meta-parameters (no non-finite checkpoint is written).
        RunFolderLost: ``out`` or its lock was deleted or replaced while the run held it.
    """
    info = METHODS.get(cfg.method)  # (an unknown name is the validation's to report)
    if info is not None and info.engine == "reference":
        raise ConfigError(
            f"--method {cfg.method} has nothing to meta-train; "
            f"score it with gwnmo-meta evaluate --method {cfg.method}"
        )
    cfg.validate()  # the one validation of the run's configuration; downstream reads it as valid
    device = resolve_device(cfg.device)
    check_meta_train(cfg, device)  # what cannot fit in memory is refused before any work
    distributed.check_divisible(cfg.meta_batch)  # before anything is written
    main = distributed.env_world().is_main  # under torchrun, rank 0 owns RUN_DIR (and its lock)
    progress = progress and main
    out = Path(out)
    if resume is True and resume_checkpoint(out) is None and not restartable(out):
        raise ConfigError(f"--resume: no checkpoint to resume in {out} (expected last.pt)")
    created = main and not out.exists()
    if main:
        check_writable(out)
    interrupts = Interrupts()  # from here on SIGTERM, like SIGINT, unwinds (releasing the lock)
    try:
        lock = RunLock(out) if main else None
        # one run per folder, from here to the end of the run
        with interrupts, lock if lock is not None else contextlib.nullcontext():
            return _locked_meta_train(
                cfg,
                out,
                device,
                resume,
                progress,
                hist_every,
                on_step,
                check_test,
                interrupts,
                allow_data_change,
                lock,
            )
    except BaseException as exc:
        # refused or failed before writing anything: leave no trace (but a folder that replaced
        # ours is someone else's)
        if created and not isinstance(exc, RunFolderLost):
            remove_if_empty(out)
        raise


def _locked_meta_train(
    cfg: RunConfig,
    out: Path,
    device: torch.device,
    resume: bool | Literal["auto"],
    progress: bool,
    hist_every: int,
    on_step: Callable[[int], None] | None,
    check_test: bool,
    interrupts: Interrupts,
    allow_data_change: bool,
    lock: RunLock | None,
) -> TrainResult:
    """The body of :func:`meta_train`, run while holding ``out``'s lock (rank 0)."""
    main = distributed.env_world().is_main
    if main:
        remove_stale_temps(out)
    path = resume_checkpoint(out) if resume else None
    ckpt = None
    if path is not None:
        if path.name == "best.pt" and main:
            state = "older than best.pt" if (out / "last.pt").is_file() else "missing"
            print(
                f"warning: {out / 'last.pt'} is {state} (the run stopped between its two "
                "checkpoint writes); resuming from best.pt",
                file=sys.stderr,
            )
        ckpt = load_checkpoint(path, KIND_META)
        if path.name == "best.pt" and main:  # finish the cut-off pair: last.pt is that state too
            atomic_write_bytes(out / "last.pt", path.read_bytes())
        cfg = resume_config(cfg, ckpt)
    elif run_artefacts(out):
        if resume is False:
            raise ConfigError(
                f"{out} already holds a run ({', '.join(run_artefacts(out)[:3])}); "
                "pass --resume to continue it or choose another --out"
            )
        if main:  # a run cut off before its first checkpoint
            if resume is True:
                print(
                    f"warning: {out} holds no checkpoint yet (the run stopped before its first "
                    "validation); starting it afresh",
                    file=sys.stderr,
                )
            for name in run_artefacts(out):
                (out / name).unlink()
    distributed.setup(device)  # no-op without torchrun; user errors come first
    trainer = MetaTrainer(
        cfg,
        out,
        device,
        progress=progress,
        hist_every=hist_every,
        check_test=check_test,
        interrupts=interrupts,
        expect_data=None if ckpt is None or allow_data_change else ckpt.get("data_fingerprint"),
        lock=lock,
    )
    if ckpt is not None:
        trainer.restore(ckpt)
    distributed.broadcast_module(trainer.method)  # every rank starts from rank 0's parameters
    if main:
        cfg.save(out / "config.json")
    result = trainer.run(on_step)
    if not result.interrupted:
        distributed.barrier()  # best.pt and last.pt are on disk before any rank reads them
    return result
