"""The meta-training loop: episodes → meta-loss → Adam on θ, with validation, checkpoints and TensorBoard.

RUN_DIR layout::

    config.json      the resolved RunConfig
    last.pt          checkpoint after the latest validation (or Ctrl-C); ``--resume`` continues it
    best.pt          checkpoint with the best meta-val accuracy so far
    events.out.tfevents.*   TensorBoard scalars, histograms and the hparams summary
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gwnmo_meta.checkpoint import (
    KIND_META,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from gwnmo_meta.config import RunConfig
from gwnmo_meta.device import resolve_device
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.evaluate import EvalSummary, evaluate_tasks
from gwnmo_meta.run_data import build_method_for, load_run_data, task_spec
from gwnmo_meta.tblog import RunLogger

# Fields of RunConfig a resumed run may change (they do not alter what has been computed so far).
RESUMABLE_CHANGES = {"meta_steps", "device", "data_root", "download", "task_batch"}


class TrainingDiverged(Exception):
    """The meta-loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports."""

    run_dir: Path
    steps_done: int
    best_val_accuracy: float | None
    last_val: EvalSummary | None
    interrupted: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def check_writable(out: Path) -> None:
    """Create ``out`` and verify a file can be written there, else ``ConfigError``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".gwnmo-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def _resume_config(cfg: RunConfig, ckpt: dict[str, Any]) -> RunConfig:
    saved = RunConfig.from_dict(ckpt["config"])
    diff = [
        k
        for k, v in cfg.to_dict().items()
        if k not in RESUMABLE_CHANGES and saved.to_dict()[k] != v
    ]
    if diff:
        raise ConfigError(
            "--resume with options that differ from the checkpoint's: "
            + ", ".join(
                f"{k} (checkpoint {saved.to_dict()[k]!r}, given {getattr(cfg, k)!r})" for k in diff
            )
        )
    return cfg


def meta_train(
    cfg: RunConfig,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    hist_every: int = 100,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Meta-train ``cfg.method`` on ``cfg.dataset``'s meta-train tasks, writing RUN_DIR ``out``."""
    cfg.validate()
    device = resolve_device(cfg.device)
    out = Path(out)
    check_writable(out)
    ckpt: dict[str, Any] | None = None
    if resume:
        last = out / "last.pt"
        if not last.exists():
            raise ConfigError(f"--resume: no checkpoint to resume in {out} (expected {last.name})")
        ckpt = load_checkpoint(last, KIND_META)
        cfg = _resume_config(cfg, ckpt)
    elif (out / "last.pt").exists():
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )

    data = load_run_data(cfg, device, progress=progress)
    torch.manual_seed(cfg.seed)  # after data loading, which may pre-train a backbone
    spec = task_spec(cfg)
    method = build_method_for(cfg, data.feature_dim, device)
    meta_opt = method.make_meta_optimizer()
    train_sampler = data.sampler("train", spec, cfg.seed, device)

    start, best_acc, history = 0, None, []
    if ckpt is not None:
        method.load_state_dict(ckpt["method"])
        if meta_opt is not None and ckpt.get("meta_optimizer") is not None:
            meta_opt.load_state_dict(ckpt["meta_optimizer"])
        train_sampler.load_state_dict(ckpt["sampler"])
        restore_rng_states(ckpt["rng"])
        start, best_acc, history = (
            ckpt["step"],
            ckpt.get("best_val_accuracy"),
            ckpt.get("history", []),
        )
    cfg.save(out / "config.json")

    def checkpoint_payload(step: int) -> dict[str, Any]:
        return {
            "kind": KIND_META,
            "config": cfg.to_dict(),
            "feature_dim": data.feature_dim,
            "method": method.state_dict(),
            "meta_optimizer": None if meta_opt is None else meta_opt.state_dict(),
            "sampler": train_sampler.state_dict(),
            "rng": rng_states(),
            "step": step,
            "best_val_accuracy": best_acc,
            "history": history,
        }

    def validate() -> EvalSummary:
        val_sampler = data.sampler("val", spec, cfg.seed + 1, device)  # same val tasks every time
        rng = rng_states()  # validation must not perturb the training stream
        summary = evaluate_tasks(
            method, val_sampler, cfg.val_tasks, progress=False, task_batch=cfg.meta_batch
        )
        restore_rng_states(rng)
        return summary

    log = RunLogger(out, purge_step=start if start else None)
    last_val: EvalSummary | None = None
    step = start
    interrupted = False
    step_start_state = None
    bar = tqdm(
        total=cfg.meta_steps,
        initial=start,
        desc="meta-train",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        while step < cfg.meta_steps:
            t0 = time.perf_counter()
            step_start_state = (train_sampler.state_dict(), rng_states())
            if meta_opt is not None:
                meta_opt.zero_grad(set_to_none=True)
            if method.task_batched:  # the meta-batch's tasks in one task-batched inner loop
                batch_loss, outcomes = method.episodes(
                    [train_sampler.sample() for _ in range(cfg.meta_batch)], train=True
                )
                meta_losses = (
                    [] if batch_loss is None else [float(batch_loss.detach())]
                )  # what is back-propagated
                if batch_loss is not None:
                    batch_loss.backward()
            else:  # one task at a time, each graph freed after its backward
                outcomes = []
                for _ in range(cfg.meta_batch):
                    outcome = method.episode(train_sampler.sample(), train=True)
                    if outcome.meta_loss is not None:
                        (outcome.meta_loss / cfg.meta_batch).backward()
                    outcomes.append(outcome)
                meta_losses = [
                    float(o.meta_loss.detach()) for o in outcomes if o.meta_loss is not None
                ]
            meta_loss = sum(meta_losses) / len(meta_losses) if meta_losses else float("nan")
            if meta_losses and not math.isfinite(meta_loss):
                raise TrainingDiverged(
                    f"meta-loss became {meta_loss} at meta-step {step + 1}; stopped, the last good checkpoint "
                    f"is {out / 'last.pt'} (try a smaller --meta-lr or --inner-lr)"
                )
            if meta_opt is not None and meta_losses:
                meta_opt.step()
            step += 1
            tasks_per_s = cfg.meta_batch / max(time.perf_counter() - t0, 1e-9)
            record = log.train_step(step, outcomes, meta_loss, tasks_per_s, method.cfg.lr, meta_opt)
            if step % hist_every == 0 or step == cfg.meta_steps:
                log.histograms(step, method, outcomes)
            if step % cfg.val_every == 0 or step == cfg.meta_steps:
                last_val = validate()
                log.validation(step, last_val)
                record.update(
                    val_accuracy=last_val.accuracy.mean, val_accuracy_ci95=last_val.accuracy.ci95
                )
                if best_acc is None or last_val.accuracy.mean > best_acc:
                    best_acc = last_val.accuracy.mean
                    history.append(record)
                    save_checkpoint(out / "best.pt", checkpoint_payload(step))
                else:
                    history.append(record)
                save_checkpoint(out / "last.pt", checkpoint_payload(step))
                bar.set_postfix(
                    meta_loss=f"{meta_loss:.3f}",
                    val_acc=f"{last_val.accuracy.mean:.3f}",
                    tasks_s=f"{tasks_per_s:.0f}",
                )
            else:
                bar.set_postfix(meta_loss=f"{meta_loss:.3f}", tasks_s=f"{tasks_per_s:.0f}")
            bar.update(1)
            if on_step is not None:
                on_step(step)
    except KeyboardInterrupt:
        # Roll the task stream back to the start of the unfinished meta-step, so --resume replays it.
        interrupted = True
        payload = checkpoint_payload(step)
        if step_start_state is not None:
            payload["sampler"], payload["rng"] = step_start_state
        save_checkpoint(out / "last.pt", payload)
    finally:
        bar.close()
        if not interrupted:
            log.hparams(cfg, best_acc, last_val)
        log.close()
    return TrainResult(out, step, best_acc, last_val, interrupted, history)
