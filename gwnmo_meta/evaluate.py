"""Accuracy and loss over held-out few-shot tasks, reported as mean ± 95% CI."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from gwnmo_meta.stats import MeanCI, mean_ci95

if TYPE_CHECKING:
    from gwnmo_meta.methods import MetaMethod
    from gwnmo_meta.tasks.episodes import EpisodeSampler


@dataclass(frozen=True)
class EvalSummary:
    """Query accuracy and loss over ``tasks`` episodes."""

    accuracy: MeanCI
    loss: MeanCI
    tasks: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy_mean": self.accuracy.mean,
            "accuracy_ci95": self.accuracy.ci95,
            "loss_mean": self.loss.mean,
            "loss_ci95": self.loss.ci95,
            "tasks": self.tasks,
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
    was_training = method.training
    chunk = max(1, task_batch) if getattr(method, "task_batched", False) else 1
    method.eval()
    try:
        with tqdm(
            total=tasks, desc=desc, disable=not progress, leave=False, dynamic_ncols=True
        ) as bar:
            done = 0
            while done < tasks:
                n = min(chunk, tasks - done)
                _, outs = method.episodes([sampler.sample() for _ in range(n)], train=False)
                accs += [float(o.query_acc) for o in outs]
                losses += [float(o.query_loss) for o in outs]
                done += n
                bar.update(n)
    finally:
        method.train(was_training)
    return EvalSummary(mean_ci95(accs), mean_ci95(losses), tasks)


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
        ``inner_steps``,
        ``method``, ``schedule``, ``weighting``, ``backbone``, ``checkpoint``, ``seed`` and a
        human-readable ``text``.

    Raises:
        CheckpointError: missing, corrupt or incompatible checkpoint.
        ConfigError, DataError: bad options or data (one-line messages).
    """
    from gwnmo_meta.checkpoint import KIND_META, load_checkpoint
    from gwnmo_meta.config import RunConfig, check_seed
    from gwnmo_meta.device import resolve_device
    from gwnmo_meta.errors import CheckpointError, ConfigError
    from gwnmo_meta.run_data import build_method_for, load_run_data, task_spec

    if tasks <= 0:
        raise ConfigError(f"--tasks must be positive, got {tasks}")
    check_seed("--seed", seed)
    ckpt = load_checkpoint(checkpoint, KIND_META)
    trained = RunConfig.from_dict(ckpt["config"])
    overrides = {
        k: v
        for k, v in dict(ways=ways, shots=shots, query=query, inner_steps=inner_steps).items()
        if v is not None
    }
    cfg = replace(
        trained,
        device=device,
        download=download,
        skip_integrity_check=skip_integrity_check or trained.skip_integrity_check,
        **overrides,
    )
    if data_root is not None:
        cfg.data_root = data_root
    cfg.validate()
    dev = resolve_device(device)
    data = load_run_data(cfg, dev, eval_dataset=dataset, progress=progress)
    if data.feature_dim != ckpt["feature_dim"]:
        raise CheckpointError(
            f"checkpoint expects {ckpt['feature_dim']}-dim features, the data gives {data.feature_dim}"
        )
    method = build_method_for(cfg, data.feature_dim, dev)
    try:
        method.load_state_dict(ckpt["method"])
    except RuntimeError:
        if cfg.ways != trained.ways:
            raise ConfigError(
                f"checkpoint {checkpoint} was meta-trained for {trained.ways}-way tasks and its learned parameters "
                f"do not fit {cfg.ways}-way; evaluate with --ways {trained.ways}"
            ) from None
        raise CheckpointError(
            f"checkpoint {checkpoint}: its parameters do not fit the model its config describes"
        ) from None
    method.to(dev)
    sampler = data.sampler("test", task_spec(cfg), seed, dev)
    summary = evaluate_tasks(
        method, sampler, tasks, progress=progress, desc="meta-test", task_batch=cfg.meta_batch
    )
    return {
        **summary.to_dict(),
        "dataset": dataset or trained.dataset,
        "trained_on": trained.dataset,
        "test_dataset": trained.test_dataset,
        "ways": cfg.ways,
        "shots": cfg.shots,
        "query": cfg.query,
        "inner_steps": cfg.inner_steps,
        "method": cfg.method,
        "schedule": cfg.schedule,
        "weighting": cfg.weighting,
        "backbone": cfg.backbone,
        "checkpoint": str(checkpoint),
        "seed": seed,
        "text": str(summary),
    }
