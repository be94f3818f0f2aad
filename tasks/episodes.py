"""N-way K-shot Q-query episodes drawn with learn2learn from cached feature tensors.

Pipeline per part: ``l2l.data.MetaDataset`` over the part's labels → ``l2l.data.Taskset`` (the 0.2
name of ``TaskDataset``) with ``FusedNWaysKShots(n=ways, k=shots+query)`` — learn2learn's fused,
equivalent form of ``NWays`` + ``KShots``. It yields each task's *description* (which images), grouped
by class, classes in random order and images in random order within a class. Position in that
order is exactly what ``RemapLabels(shuffle=True)`` would assign (labels 0..N−1), and the first
``shots`` images of each class form the support set, the other ``query`` the query set (disjoint:
learn2learn samples without replacement). ``LoadData`` would then fetch image by image; instead the
features are gathered with one ``index_select`` of the cached feature tensor, which gives the same
tensors (checked in the tests against l2l's own ``LoadData``) at thousands of tasks per second.

learn2learn draws from Python's global ``random`` module. The sampler swaps its private state in
around each draw and back out afterwards, so the task stream depends only on the sampler's seed
(same seed → same tasks, in any process), and user code using ``random`` neither changes nor is
changed by it. Not thread-safe: do not use ``random`` from another thread while sampling.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gwnmo_meta.errors import ConfigError, DataError
from gwnmo_meta.tasks.splits import format_classes


@dataclass(frozen=True)
class TaskSpec:
    """N ways, K support shots and Q query examples per class."""

    ways: int = 5
    shots: int = 1
    query: int = 15

    def validate(self) -> TaskSpec:
        for name in ("ways", "shots", "query"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"--{name} must be an integer, got {v!r}")
            if v <= 0:
                raise ConfigError(f"--{name} must be positive, got {v}")
        return self


@dataclass
class Episode:
    """One few-shot task: features [n, D] float32 and labels (0..N−1, int64) of the support and query sets.

    Rows are grouped by label: support ``[c0]*K + [c1]*K + ...``, query likewise with Q.
    ``image_ids`` (CPU, int64, support rows then query rows) are the images' indices in the
    :class:`FewShotData` tensors; ``None`` for hand-made episodes. ``judge_seed`` seeds the
    episode's own draws of query subsets for a sampled look-ahead judge (``--judge-queries``):
    an int for one episode, a list of ints for a stack; ``None`` for hand-made episodes.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    image_ids: Tensor | None = field(default=None, repr=False, compare=False)
    judge_seed: int | list[int] | None = field(default=None, repr=False, compare=False)

    def to(self, device: torch.device | str) -> Episode:
        return Episode(
            self.support_x.to(device),
            self.support_y.to(device),
            self.query_x.to(device),
            self.query_y.to(device),
            image_ids=self.image_ids,
            judge_seed=self.judge_seed,
        )


def judge_seed(seed: int, index: int) -> int:
    """The seed of episode ``index``'s judge draws in a stream seeded ``seed`` (splitmix64).

    A pure function of the stream's seed and the episode's position, so the task stream itself
    (learn2learn's draws) is untouched and a resumed stream gives every episode the same seed.
    """
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 1  # non-negative, fits torch.Generator.manual_seed


def stack_episodes(eps: Sequence[Episode]) -> Episode:
    """T episodes of one spec as one task batch: every tensor gains a leading task dimension T."""
    if not eps:
        raise ValueError("stack_episodes needs at least one episode")
    seeds = [e.judge_seed for e in eps if isinstance(e.judge_seed, int)]
    return Episode(
        torch.stack([e.support_x for e in eps]),
        torch.stack([e.support_y for e in eps]),
        torch.stack([e.query_x for e in eps]),
        torch.stack([e.query_y for e in eps]),
        judge_seed=seeds if len(seeds) == len(eps) else None,  # one per episode, or none
    )


class EpisodeSampler:
    """Seeded, resumable stream of episodes over ``features[indices]``.

    ``features`` [N, D] and ``labels`` [N] cover a whole dataset; ``indices`` selects the part
    (meta-train / meta-val / meta-test images). The part's features move to ``device`` once; each
    episode is then one index transfer and one ``index_select`` there. ``dataset`` names classes
    ``dataset:class`` in error messages.
    """

    def __init__(
        self,
        features: Tensor,
        labels: Tensor,
        indices: Tensor,
        spec: TaskSpec,
        seed: int,
        device: torch.device | str = "cpu",
        part: str = "tasks",
        dataset: str | None = None,
    ) -> None:
        spec.validate()
        if features.dim() != 2 or len(features) != len(labels):
            raise DataError(
                f"features must be [N, D] with one row per label; got {tuple(features.shape)} for {len(labels)} labels"
            )
        self.spec, self.device, self.part = spec, torch.device(device), part
        indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
        part_labels = labels.cpu()[indices]
        classes = sorted(set(part_labels.tolist()))
        if spec.ways > len(classes):
            shown = ", ".join(format_classes(classes, dataset))
            raise ConfigError(
                f"--ways {spec.ways} exceeds the {len(classes)} classes available for {part} ({shown})"
            )
        labels_to_indices = {c: (part_labels == c).nonzero().flatten().tolist() for c in classes}
        counts = {c: len(v) for c, v in labels_to_indices.items()}
        smallest = min(classes, key=lambda c: counts[c])
        need = spec.shots + spec.query
        if counts[smallest] < need:
            name = format_classes([smallest], dataset)[0]
            raise DataError(
                f"{part}: class {name} has only {counts[smallest]} images (the smallest class), fewer than "
                f"--shots + --query = {need}; lower --shots/--query"
            )
        from gwnmo_meta.training.l2l import (
            learn2learn,  # heavy import: only when a sampler is built
        )

        l2l = learn2learn()

        self._labels_dataset = torch.utils.data.TensorDataset(part_labels)
        self.meta_dataset = l2l.data.MetaDataset(
            self._labels_dataset, labels_to_indices=labels_to_indices
        )
        self.task_transform = l2l.data.transforms.FusedNWaysKShots(
            self.meta_dataset, n=spec.ways, k=need
        )
        self.taskset = l2l.data.Taskset(
            self.meta_dataset, task_transforms=[self.task_transform], num_tasks=-1
        )
        self.part_labels = part_labels
        self._global_ids = indices
        self._features = features[indices].to(self.device, torch.float32).contiguous()
        self._state = random.Random(seed).getstate()
        self.seed = seed
        self.tasks_sampled = 0
        k, q, n = spec.shots, spec.query, spec.ways
        block = torch.arange(n * need).view(n, need)
        self._order_cpu = torch.cat([block[:, :k].reshape(-1), block[:, k:].reshape(-1)])
        self._support_pos = block[:, :k].reshape(-1).to(self.device)
        self._query_pos = block[:, k:].reshape(-1).to(self.device)
        self._support_y = torch.arange(n).repeat_interleave(k).to(self.device)
        self._query_y = torch.arange(n).repeat_interleave(q).to(self.device)

    @property
    def feature_dim(self) -> int:
        return int(self._features.shape[1])

    def description(self) -> list[int]:
        """The next task's learn2learn description: part-local image positions, grouped by class."""
        outer = random.getstate()
        random.setstate(self._state)
        try:
            desc = self.taskset.sample_task_description()
        finally:
            self._state = random.getstate()
            random.setstate(outer)
        self.tasks_sampled += 1
        return [dd.index for dd in desc]

    def sample(self) -> Episode:
        """The next episode of the stream (tensors on the sampler's device)."""
        index = self.tasks_sampled
        local = torch.tensor(self.description(), dtype=torch.int64)
        x = self._features.index_select(0, local.to(self.device))
        ids = self._global_ids.index_select(0, local).index_select(0, self._order_cpu)
        return Episode(
            x.index_select(0, self._support_pos),
            self._support_y.clone(),
            x.index_select(0, self._query_pos),
            self._query_y.clone(),
            image_ids=ids,
            judge_seed=judge_seed(self.seed, index),
        )

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """Resume point: the private random state (and a counter, for information)."""
        return {"rng": self._state, "tasks_sampled": self.tasks_sampled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rng = state["rng"]
        if isinstance(rng, list):  # e.g. after a JSON round trip
            rng = (rng[0], tuple(rng[1]), rng[2])
        self._state = rng
        self.tasks_sampled = int(state.get("tasks_sampled", 0))
