"""N-way K-shot Q-query episodes drawn with learn2learn from cached feature tensors.

learn2learn's ``MetaDataset`` + ``Taskset`` (the 0.2 name of ``TaskDataset``) with ``FusedNWaysKShots(n=ways, k=shots+query)``
produce each task's description (which images); the description is grouped by class in a random
class order, which is exactly ``RemapLabels``' relabelling 0..N−1. The images' features are then
gathered with one tensor index, so sampling a task costs no image decoding. learn2learn draws from
Python's global ``random`` module; the sampler swaps in its own private state around each draw,
so the task stream depends only on the sampler's seed (and user code using ``random`` is untouched).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gwnmo_meta.errors import ConfigError, DataError


@dataclass(frozen=True)
class TaskSpec:
    """N ways, K support shots and Q query examples per class."""

    ways: int = 5
    shots: int = 1
    query: int = 15

    def validate(self) -> "TaskSpec":
        for name in ("ways", "shots", "query"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        return self


@dataclass
class Episode:
    """One few-shot task: features and labels (0..N−1) of the support and query sets."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def to(self, device: torch.device | str) -> "Episode":
        return Episode(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x, self.query_y)))


class EpisodeSampler:
    """Seeded stream of episodes over ``features[indices]`` (resumable via ``state_dict``)."""

    def __init__(self, features: Tensor, labels: Tensor, indices: Tensor, spec: TaskSpec, seed: int,
                 device: torch.device | str = "cpu", part: str = "tasks") -> None:
        import learn2learn as l2l

        spec.validate()
        self.spec, self.device = spec, torch.device(device)
        part_labels = labels[indices]
        classes = sorted(set(part_labels.tolist()))
        if spec.ways > len(classes):
            raise ConfigError(f"--ways {spec.ways} exceeds the {len(classes)} classes available for {part} ({classes})")
        counts = {c: int((part_labels == c).sum()) for c in classes}
        smallest = min(counts, key=counts.get)
        need = spec.shots + spec.query
        if counts[smallest] < need:
            raise DataError(
                f"{part}: class {smallest} has only {counts[smallest]} images, fewer than --shots + --query = {need}"
            )
        labels_to_indices = {c: (part_labels == c).nonzero().flatten().tolist() for c in classes}
        dataset = l2l.data.MetaDataset(torch.utils.data.TensorDataset(part_labels), labels_to_indices=labels_to_indices)
        transform = l2l.data.transforms.FusedNWaysKShots(dataset, n=spec.ways, k=need)
        self._taskset = l2l.data.Taskset(dataset, task_transforms=[transform], num_tasks=-1)
        # Episode tensors live on the target device once; sampling is then pure indexing there.
        self._features = features[indices].to(self.device)
        self._rng = random.Random(seed)
        k, q, n = spec.shots, spec.query, spec.ways
        block = torch.arange(n * need).view(n, need)
        self._support_pos = block[:, :k].reshape(-1).to(self.device)
        self._query_pos = block[:, k:].reshape(-1).to(self.device)
        self._support_y = torch.arange(n).repeat_interleave(k).to(self.device)
        self._query_y = torch.arange(n).repeat_interleave(q).to(self.device)

    def _description(self) -> list[int]:
        outer = random.getstate()
        random.setstate(self._rng.getstate())
        try:
            desc = self._taskset.sample_task_description()
        finally:
            self._rng.setstate(random.getstate())
            random.setstate(outer)
        return [dd.index for dd in desc]

    def sample(self) -> Episode:
        """The next episode of the stream."""
        idx = torch.tensor(self._description(), device=self.device)
        x = self._features[idx]
        return Episode(x[self._support_pos], self._support_y, x[self._query_pos], self._query_y)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.setstate(state["rng"])
