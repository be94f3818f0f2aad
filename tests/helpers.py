"""Small synthetic task distributions for tests."""

from __future__ import annotations

import torch

from gwnmo_meta.config import RunConfig
from gwnmo_meta.tasks.fewshot import FewShotData
from gwnmo_meta.tasks.splits import ClassSplit, split_indices


def noisy_fewshot(
    seed: int = 0,
    informative: int = 4,
    noise_dims: int = 12,
    classes: int = 20,
    per_class: int = 30,
) -> FewShotData:
    """Classes separable on a few coordinates; the other coordinates are loud, class-independent noise.

    Plain (uniformly weighted) gradient steps are misled by the noise; an optimizer that learns to
    down-weight the noise coordinates adapts much better — a task where GWNMO's weighting matters.
    """
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, informative, generator=g)
    labels = torch.arange(classes).repeat_interleave(per_class)
    x_inf = centers[labels] + 0.3 * torch.randn(len(labels), informative, generator=g)
    x_noise = 3.0 * torch.randn(len(labels), noise_dims, generator=g)
    split = ClassSplit(tuple(range(classes // 2)), (), tuple(range(classes // 2, classes)))
    parts = split_indices(labels, torch.zeros(len(labels), dtype=torch.bool), split, seed=seed)
    return FewShotData(torch.cat([x_inf, x_noise], 1), labels, parts, split)


def tiny_base(data_root: object, **overrides: object) -> RunConfig:
    """The RunConfig of the benchmark tests: tiny data, raw pixels, 3 queries, meta-batch 2, CPU."""
    fields: dict[str, object] = dict(
        data_root=str(data_root), backbone="none", query=3, meta_batch=2, device="cpu"
    )
    return RunConfig(**{**fields, **overrides})
