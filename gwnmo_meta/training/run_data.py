"""Glue between a RunConfig and the tasks/ and methods modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gwnmo_meta.config import RunConfig

if TYPE_CHECKING:
    from gwnmo_meta.tasks.episodes import TaskSpec
    from gwnmo_meta.tasks.fewshot import FewShotConfig, FewShotData
    from gwnmo_meta.training.methods import MetaMethod, MethodConfig


def task_spec(cfg: RunConfig) -> TaskSpec:
    """The N-way K-shot Q-query spec of ``cfg``."""
    from gwnmo_meta.tasks.episodes import TaskSpec

    return TaskSpec(ways=cfg.ways, shots=cfg.shots, query=cfg.query)


def fewshot_config(
    cfg: RunConfig,
    eval_dataset: str | None = None,
    progress: bool = True,
    expect_data: str | None = None,
) -> FewShotConfig:
    """The tasks module's FewShotConfig for ``cfg``.

    Args:
        cfg: the run.
        eval_dataset: another dataset to meta-test on (cross-dataset protocol: its classes, the
            run's backbone), or ``None``.
        progress: progress bars while features are computed.
        expect_data: the fingerprint the loaded images must have (``None``: any).

    Returns:
        The data configuration.
    """
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.tasks.data import MIXED
    from gwnmo_meta.tasks.fewshot import FewShotConfig
    from gwnmo_meta.tasks.splits import ClassSplit

    cross = eval_dataset is not None and eval_dataset != cfg.dataset
    given = any(c is not None for c in (cfg.train_classes, cfg.val_classes, cfg.test_classes))
    if given and cfg.test_dataset is not None:
        raise ConfigError(
            "--test-dataset chooses the whole split; do not combine it with "
            "--train-classes/--val-classes/--test-classes"
        )
    if cross and MIXED in (cfg.dataset, eval_dataset) and eval_dataset != cfg.test_dataset:
        trained = cfg.dataset + (f" --test-dataset {cfg.test_dataset}" if cfg.test_dataset else "")
        raise ConfigError(
            f"--dataset {eval_dataset} shares classes with what the checkpoint was meta-trained on "
            f"(--dataset {trained}); evaluate it without --dataset (its own meta-test classes), or "
            "meta-train on mixed with --test-dataset to hold a whole dataset out"
        )
    train_split = (
        ClassSplit.from_strings(
            cfg.train_classes, cfg.val_classes, cfg.test_classes, dataset=cfg.dataset
        )
        if given
        else None
    )
    return FewShotConfig(
        dataset=cfg.dataset if eval_dataset is None else eval_dataset,  # cfg.dataset unless cross
        data_root=cfg.data_root,
        download=cfg.download,
        skip_integrity_check=cfg.skip_integrity_check,
        backbone=cfg.backbone,
        backbone_dataset=cfg.dataset,
        backbone_split=train_split,
        split=None if cross else train_split,
        test_dataset=cfg.test_dataset,
        keep_image_split=cfg.keep_image_split,
        seed=cfg.seed if cfg.data_seed is None else cfg.data_seed,
        progress=progress,
        expected_fingerprint=expect_data,
    )


def load_run_data(
    cfg: RunConfig,
    device: torch.device,
    *,
    eval_dataset: str | None = None,
    progress: bool = True,
    expect_data: str | None = None,
) -> FewShotData:
    """Features and task samplers for ``cfg`` (cached features; backbone from ``cfg.dataset``).

    Args:
        cfg: the run.
        device: where the backbone computes features.
        eval_dataset: see :func:`fewshot_config`.
        progress: progress bars while features are computed.
        expect_data: the data fingerprint a resumed run was trained on: other data are refused
            (``DataError``) before any backbone is trained.

    Returns:
        The few-shot data of the run; with ``cfg.adapt == "all"`` the episodes carry flat
        canonical images instead of features (no backbone).
    """
    from gwnmo_meta.tasks.fewshot import prepare_fewshot, prepare_images

    fs = fewshot_config(cfg, eval_dataset, progress, expect_data)
    return prepare_images(fs) if cfg.adapt == "all" else prepare_fewshot(fs, device)


def method_config(cfg: RunConfig) -> MethodConfig:
    """The methods module's view of ``cfg`` (inner lr ``None`` → the method's default)."""
    from gwnmo_meta.training.methods import MethodConfig

    return MethodConfig(**cfg.to_dict())  # the same fields (MethodConfig derives from RunConfig)


def build_method_for(cfg: RunConfig, feature_dim: int, device: torch.device) -> MetaMethod:
    """Build the MetaMethod of ``cfg`` on ``device``.

    Args:
        cfg: the run, already validated (``meta_train`` and the evaluators validate the config
            they are given; this does not check it again).
        feature_dim: width of the backbone's features (the head's input).
        device: where the method's parameters live.

    Returns:
        The method, initialised from ``cfg.seed``.
    """
    from gwnmo_meta.training.methods import make_method

    return make_method(method_config(cfg), feature_dim, cfg.ways, device)
