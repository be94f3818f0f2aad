"""Accuracy and loss over held-out few-shot tasks, reported as mean ± 95% CI."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from gwnmo_meta.evaluation.stats import MeanCI, mean_ci95
from gwnmo_meta.training import distributed

if TYPE_CHECKING:
    import torch

    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.tasks.episodes import EpisodeSampler
    from gwnmo_meta.tasks.fewshot import FewShotData
    from gwnmo_meta.training.methods import MetaMethod


@dataclass(frozen=True)
class EvalSummary:
    """Query accuracy and loss over ``tasks`` episodes.

    ``step_accuracy`` / ``step_loss``: mean query accuracy / loss over the tasks at the init and
    after every inner step (the last entry is the final result; one entry for methods without
    inner steps). ``task_accuracies`` / ``task_losses``: per task, in sampling order, so two
    methods scored on the same task stream can be compared pair by pair.
    """

    accuracy: MeanCI
    loss: MeanCI
    tasks: int
    step_accuracy: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    task_accuracies: list[float] = field(default_factory=list, repr=False)
    task_losses: list[float] = field(default_factory=list, repr=False)
    tasks_digest: str = ""  # sha1 of the tasks' image ids: equal digests = identical tasks

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy_mean": self.accuracy.mean,
            "accuracy_ci95": self.accuracy.ci95,
            "loss_mean": self.loss.mean,
            "loss_ci95": self.loss.ci95,
            "tasks": self.tasks,
            "step_accuracy_mean": self.step_accuracy,
            "step_loss_mean": self.step_loss,
            "task_accuracies": self.task_accuracies,
            "task_losses": self.task_losses,
            "tasks_digest": self.tasks_digest,
        }

    def __str__(self) -> str:
        return (
            f"accuracy {100 * self.accuracy.mean:.2f}% ± {100 * self.accuracy.ci95:.2f}% (95% CI), "
            f"query loss {self.loss.mean:.4f} ± {self.loss.ci95:.4f}, {self.tasks} tasks"
        )


def evaluate_tasks(
    method: MetaMethod,
    sampler: EpisodeSampler,
    tasks: int,
    *,
    progress: bool = True,
    desc: str = "evaluate",
    task_batch: int = 1,
) -> EvalSummary:
    """Adapt ``method`` on each of ``tasks`` episodes from ``sampler`` and score its query set.

    A task-batched method (``method.task_batched``) adapts up to ``task_batch`` tasks at a time;
    the tasks, and so the summary up to float rounding, are the same either way.
    Under torchrun every rank draws all the tasks but adapts only its share of the chunks; the
    results are gathered in task order, so every rank returns what one process would compute
    (see :mod:`gwnmo_meta.training.distributed`).

    Args:
        method: the method, with its meta-learned state (left in its train/eval mode).
        sampler: the episode stream (e.g. ``FewShotData.sampler("test", spec, seed)``).
        tasks: how many episodes.
        progress: a progress bar.
        desc: the progress bar's label.
        task_batch: at most this many tasks adapted together.

    Returns:
        Query accuracy and loss, mean ± 95% CI over the tasks.
    """
    accs: list[float] = []
    losses: list[float] = []
    step_accs: list[list[float]] = []
    step_losses: list[list[float]] = []
    digest = hashlib.sha1()
    was_training = method.training
    chunk = max(1, task_batch) if getattr(method, "task_batched", False) else 1
    world = distributed.world()
    lo, hi = world.chunk_slice(tasks, chunk)  # this rank's tasks; (0, tasks) in one process
    method.eval()
    try:
        with tqdm(
            total=hi - lo,
            desc=desc,
            disable=not progress or not world.is_main,
            leave=False,
            dynamic_ncols=True,
        ) as bar:
            done = 0
            while done < tasks:
                n = min(chunk, tasks - done)
                eps = [sampler.sample() for _ in range(n)]
                for ep in eps:
                    if ep.image_ids is not None:
                        digest.update(ep.image_ids.numpy().tobytes())
                if lo <= done < hi:  # a chunk of this rank's share
                    _, outs = method.episodes(eps, train=False)
                    accs += [float(o.query_acc) for o in outs]
                    losses += [float(o.query_loss) for o in outs]
                    step_accs += [o.step_query_acc for o in outs]
                    step_losses += [o.step_query_loss for o in outs]
                    bar.update(n)
                done += n
    finally:
        method.train(was_training)
    accs, losses, step_accs, step_losses = distributed.gather_lists(
        accs, losses, step_accs, step_losses
    )
    return EvalSummary(
        mean_ci95(accs),
        mean_ci95(losses),
        tasks,
        _mean_curve(step_accs),
        _mean_curve(step_losses),
        accs,
        losses,
        digest.hexdigest(),
    )


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """Entry-wise mean of equally long per-task curves ([] when any task has none)."""
    if not curves or not all(curves) or len({len(c) for c in curves}) != 1:
        return []
    return [math.fsum(col) / len(col) for col in zip(*curves, strict=True)]


EVAL_TASK_BATCH = 50  # tasks adapted together when evaluating a task-batched method


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    download: bool = False,
    skip_integrity_check: bool = False,
    tasks: int = 600,
    ways: int | None = None,
    shots: int | None = None,
    query: int | None = None,
    inner_steps: int | None = None,
    device: str = "auto",
    seed: int = 1234,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a meta-train checkpoint on meta-test tasks (of another dataset for cross-dataset transfer).

    Args:
        checkpoint: best.pt or last.pt of a meta-train run.
        dataset: meta-test on this dataset (default: the training dataset).
        data_root: folder with the datasets (default: the run's, else ``$GWNMO_DATA`` ...).
        download: let torchvision download missing data.
        skip_integrity_check: accept a re-packed CIFAR-10 copy.
        tasks: number of meta-test tasks.
        ways: N (default: as trained).
        shots: K (default: as trained).
        query: Q (default: as trained).
        inner_steps: inner steps (default: as trained).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        seed: seed of the meta-test task stream.
        progress: progress bars.

    Returns:
        A JSON-ready dict: ``accuracy_mean``, ``accuracy_ci95``, ``loss_mean``, ``loss_ci95``,
        ``tasks``, ``dataset``, ``trained_on``, ``test_dataset`` (the held-out dataset of a
        leave-one-dataset-out run on mixed, else null), ``ways``, ``shots``, ``query``,
        ``inner_steps``, ``method``, ``schedule``, ``weighting``, ``backbone``, ``checkpoint``,
        ``seed`` and a human-readable ``text``.

    Raises:
        CheckpointError: missing, corrupt or incompatible checkpoint.
        ConfigError, DataError: bad options or data (one-line messages).
    """
    from gwnmo_meta.config import RunConfig, check_seed
    from gwnmo_meta.device import resolve_device
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.io.checkpoint import KIND_META, load_checkpoint
    from gwnmo_meta.memory import check_meta_train
    from gwnmo_meta.training.run_data import load_run_data

    if tasks <= 0:
        raise ConfigError(f"--tasks must be positive, got {tasks}")
    check_seed("--seed", seed)
    ckpt = load_checkpoint(checkpoint, KIND_META)
    trained = RunConfig.from_dict(ckpt["config"])
    cfg = trained.replace(
        device=device,
        download=download,
        skip_integrity_check=skip_integrity_check or trained.skip_integrity_check,
        data_root=trained.data_root if data_root is None else data_root,
        **_task_overrides(trained, ways, shots, query, inner_steps),
    )
    cfg.validate()
    dev = resolve_device(device)
    check_meta_train(cfg, dev, ckpt["feature_dim"], train=False)  # e.g. a checkpoint's huge sizes
    progress = progress and distributed.setup(dev).is_main  # torchrun: shard the tasks
    data = load_run_data(cfg, dev, eval_dataset=dataset, progress=progress)
    method = _trained_method(cfg, data.feature_dim, dev, ckpt, checkpoint, trained.ways)
    return _score(
        method,
        data,
        cfg,
        tasks=tasks,
        seed=seed,
        progress=progress,
        dataset=dataset or trained.dataset,
        checkpoint=str(checkpoint),
        device=dev,
    )


def _task_overrides(
    trained: RunConfig,
    ways: int | None,
    shots: int | None,
    query: int | None,
    inner_steps: int | None,
) -> dict[str, int]:
    """The episode shape to evaluate: each given value, else the trained run's."""
    return {
        "ways": trained.ways if ways is None else ways,
        "shots": trained.shots if shots is None else shots,
        "query": trained.query if query is None else query,
        "inner_steps": trained.inner_steps if inner_steps is None else inner_steps,
    }


def _trained_method(
    cfg: Any,
    feature_dim: int,
    device: Any,
    ckpt: dict[str, Any],
    checkpoint: str | Path,
    trained_ways: int,
) -> Any:
    """The checkpoint's method with its learned parameters (one-line errors if they misfit)."""
    from gwnmo_meta.errors import CheckpointError, ConfigError
    from gwnmo_meta.training.run_data import build_method_for

    if feature_dim != ckpt["feature_dim"]:
        raise CheckpointError(
            f"checkpoint expects {ckpt['feature_dim']}-dim features, the data gives {feature_dim}"
        )
    method = build_method_for(cfg, feature_dim, device)
    try:
        method.load_state_dict(ckpt["method"])
    except RuntimeError:
        if cfg.ways != trained_ways:
            raise ConfigError(
                f"checkpoint {checkpoint} was meta-trained for {trained_ways}-way tasks and its learned parameters "
                f"do not fit {cfg.ways}-way; evaluate with --ways {trained_ways}"
            ) from None
        raise CheckpointError(
            f"checkpoint {checkpoint}: its parameters do not fit the model its config describes"
        ) from None
    return method.to(device)


def evaluate_method(
    cfg: RunConfig, *, tasks: int = 600, seed: int = 1234, part: str = "test", progress: bool = True
) -> dict[str, Any]:
    """Score a method that has nothing to meta-learn, without a checkpoint.

    For ``prototype`` and ``logreg``, and for ``sgd``/``adam``/``hg`` fine-tuning from the fixed
    random init of ``cfg.seed`` (``learn_init=False``). ``cfg`` (a ``RunConfig``) gives the data
    exactly as ``meta-train`` would see them (same backbone, split and features for the same
    flags and ``cfg.seed``), so the tasks of ``seed`` are the ones a checkpoint of that run is
    scored on.

    Args:
        cfg: the run's ``RunConfig`` (method, data and task flags).
        tasks: number of tasks.
        seed: seed of the task stream.
        part: ``test`` (default) or ``val`` (for tuning on meta-val).
        progress: show a progress bar.

    Returns:
        The same keys as :func:`evaluate_checkpoint` (``checkpoint`` is ``None``).
    """
    from gwnmo_meta.config import check_seed
    from gwnmo_meta.device import resolve_device
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.memory import check_meta_train
    from gwnmo_meta.registry import METHODS
    from gwnmo_meta.training.run_data import build_method_for, load_run_data

    if tasks <= 0:
        raise ConfigError(f"--tasks must be positive, got {tasks}")
    check_seed("--seed", seed)
    info = METHODS.get(cfg.method)  # (an unknown name is the validation's to report)
    fine_tuner = info is not None and info.engine == "higher" and not info.learned_optimizer
    if info is not None and not (info.engine == "reference" or fine_tuner and not cfg.learn_init):
        candidates = METHODS.names(lambda m: m.engine == "reference" or m.engine == "higher")
        allowed = [m for m in candidates if not METHODS[m].learned_optimizer]
        raise ConfigError(
            f"--method {cfg.method} meta-learns parameters; evaluate its meta-train checkpoint "
            f"(without one: {', '.join(allowed)}; fine-tuning from a fixed init)"
        )
    cfg.validate()  # the one validation of the configuration; downstream reads it as valid
    dev = resolve_device(cfg.device)
    check_meta_train(cfg, dev, train=False)
    data = load_run_data(cfg, dev, progress=progress)
    method = build_method_for(cfg, data.feature_dim, dev)
    return _score(
        method,
        data,
        cfg,
        tasks=tasks,
        seed=seed,
        progress=progress,
        dataset=cfg.dataset,
        checkpoint=None,
        device=dev,
        part=part,
    )


def _score(
    method: MetaMethod,
    data: FewShotData,
    cfg: RunConfig,
    *,
    tasks: int,
    seed: int,
    progress: bool,
    dataset: str,
    checkpoint: str | None,
    device: torch.device,
    part: str = "test",
) -> dict[str, Any]:
    from gwnmo_meta.training.run_data import task_spec

    sampler = data.sampler(part, task_spec(cfg), seed, device)
    summary = evaluate_tasks(
        method,
        sampler,
        tasks,
        progress=progress,
        desc=f"meta-{part}",
        task_batch=max(cfg.meta_batch, EVAL_TASK_BATCH),
    )
    return {
        **summary.to_dict(),
        "dataset": dataset,
        "trained_on": cfg.dataset,
        "test_dataset": cfg.test_dataset,
        "ways": cfg.ways,
        "shots": cfg.shots,
        "query": cfg.query,
        "inner_steps": cfg.inner_steps,
        "method": cfg.method,
        "schedule": cfg.schedule_name,
        "weighting": cfg.weighting,
        "backbone": cfg.backbone,
        "adapt": cfg.adapt,
        "checkpoint": checkpoint,
        "seed": seed,
        "text": str(summary),
    }
