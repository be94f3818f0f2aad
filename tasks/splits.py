"""Class splits: disjoint meta-train / meta-val / meta-test classes, and which images each part uses.

Default for a 10-class dataset: meta-train classes 0-4, meta-test classes 5-9. Three disjoint
5-class sets do not fit in 10 classes, so by default meta-val draws its tasks from the meta-train
classes but on a held-out 20% of their images (never used for meta-training; seeded); it serves
only checkpoint selection. Pass explicit ``val`` classes for class-disjoint validation.

``mixed`` (30 classes, :func:`dataset_split`): class-disjoint by default, per source dataset
classes 0-4 meta-train, 5-6 meta-val, 7-9 meta-test. Leave-one-dataset-out (``test_dataset``):
all ten classes of the held-out dataset are meta-test; of each other dataset, classes 0-6 are
meta-train and 7-9 meta-val. Class lists name classes ``dataset:class`` (:func:`parse_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.tasks.data import MIXED, NUM_CLASSES, SOURCES, class_names, class_offsets

VAL_FRACTION = 0.2
# per source dataset: which of its classes go where (documented in docs/TASKS.md)
MIXED_PARTS = {"train": tuple(range(5)), "val": (5, 6), "test": (7, 8, 9)}
LODO_PARTS = {"train": tuple(range(7)), "val": (7, 8, 9)}


def _parse_range(part: str, limit: int | None) -> list[int]:
    """``N`` or ``N-M`` as labels; a bound at or above ``limit`` is refused before expanding."""
    if "-" in part:
        lo, hi = (int(p) for p in part.split("-", 1))
        if hi < lo:
            raise ValueError
    else:
        lo = hi = int(part)
    if limit is not None and hi >= limit:
        raise _OutOfRange(hi, limit)
    return list(range(lo, hi + 1))


class _OutOfRange(Exception):
    """A class label beyond the dataset's classes (raised before a range is expanded)."""

    def __init__(self, label: int, limit: int) -> None:
        super().__init__(label)
        self.label, self.limit = label, limit


def parse_classes(
    text: str, dataset: str | None = None, num_classes: int | None = None
) -> tuple[int, ...]:
    """Class labels of a list such as ``"0-4"``, ``"0,2,5-7"`` or (named) ``"cifar10:0-4,mnist:3,fmnist"``.

    Args:
        text: comma-separated items: ``N`` or ``N-M`` (labels; not for ``mixed``), ``dataset:N``,
            ``dataset:N-M`` (that dataset's classes), or a bare ``dataset`` (all its classes).
        dataset: the dataset the labels belong to; ``None`` allows plain labels only.
        num_classes: with ``dataset=None``, the number of classes plain labels are checked
            against (default: ``dataset``'s). Labels are checked before a range is expanded.

    Returns:
        The labels in the order given (for ``mixed``: 0-9 mnist, 10-19 fmnist, 20-29 cifar10).
    """
    offsets = class_offsets(dataset) if dataset is not None else {}
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        src, sep, rest = part.rpartition(":")
        if not sep and part in offsets:
            src, rest = part, f"0-{NUM_CLASSES[part] - 1}"
        if src or sep:
            if src not in offsets:
                allowed = ", ".join(offsets) or "none: use plain class numbers"
                raise ConfigError(
                    f"class {part!r} in {text!r}: unknown dataset {src!r} (datasets here: {allowed})"
                )
        elif dataset == MIXED:
            raise ConfigError(
                f"class {part!r} in {text!r}: on --dataset mixed name classes dataset:class, "
                "e.g. cifar10:7, cifar10:0-4 or fmnist"
            )
        owner = src or dataset
        limit = NUM_CLASSES[owner] if owner in NUM_CLASSES else num_classes
        try:
            local = _parse_range(rest if src else part, limit)
        except ValueError:
            raise ConfigError(
                f"cannot parse class list {text!r}; use e.g. 0-4 or 0,2,5-7"
                + (" or cifar10:0-4,mnist:3" if dataset == MIXED else "")
            ) from None
        except _OutOfRange as exc:
            name = f"{src}:{exc.label}" if src else str(exc.label)
            has = f"{owner} has" if owner else "there are"
            raise ConfigError(
                f"class {name} in {text!r} does not exist ({has} classes 0-{exc.limit - 1})"
            ) from None
        if src:
            local = [offsets[src] + c for c in local]
        out.extend(local)
    if not out:
        raise ConfigError(f"empty class list {text!r}")
    if len(set(out)) != len(out):
        raise ConfigError(f"class list {text!r} repeats a class")
    return tuple(out)


def format_classes(classes: Sequence[int], dataset: str | None = None) -> list[str]:
    """``dataset:class`` names of ``classes`` (labels as text when ``dataset`` is None)."""
    names = class_names(dataset) if dataset is not None else None
    return [names[c] if names is not None and 0 <= c < len(names) else str(c) for c in classes]


@dataclass(frozen=True)
class ClassSplit:
    """Meta-train, meta-val and meta-test classes (``val`` empty: held-out images of ``train``)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @classmethod
    def from_strings(
        cls,
        train: str | None,
        val: str | None,
        test: str | None,
        num_classes: int = 10,
        dataset: str | None = None,
    ) -> ClassSplit:
        """Class lists as the CLI takes them; a list not given takes ``dataset``'s default.

        Args:
            train, val, test: class lists (:func:`parse_classes`), or None for the default.
            num_classes: used when ``dataset`` is None (plain labels, :func:`default_split`).
            dataset: names the classes and picks the default split (:func:`dataset_split`).
        """
        d = dataset_split(dataset) if dataset is not None else default_split(num_classes)
        n = None if dataset is not None else num_classes
        return cls(
            parse_classes(train, dataset, n) if train else d.train,
            parse_classes(val, dataset, n) if val else d.val,
            parse_classes(test, dataset, n) if test else d.test,
        )

    def validate(self, num_classes: int, dataset: str | None = None) -> ClassSplit:
        """ConfigError for classes outside 0..num_classes-1, empty train/test lists, or overlaps.

        ``dataset`` names the classes in the messages (``dataset:class``).
        """
        parts = {"train": self.train, "val": self.val, "test": self.test}
        for name, classes in parts.items():
            bad = [c for c in classes if not 0 <= c < num_classes]
            if bad:
                raise ConfigError(f"--{name}-classes has classes {bad} outside 0-{num_classes - 1}")
        if not self.train or not self.test:
            raise ConfigError("meta-train and meta-test class lists must not be empty")
        names = list(parts)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                common = sorted(set(parts[a]) & set(parts[b]))
                if common:
                    shown = ", ".join(format_classes(common, dataset))
                    raise ConfigError(
                        f"--{a}-classes and --{b}-classes overlap on classes [{shown}] "
                        "(a list not given takes its default: see gwnmo-meta splits)"
                    )
        return self

    def key(self) -> str:
        fmt = lambda cs: "".join(str(c) + "." for c in cs) or "-"  # noqa: E731
        return f"tr{fmt(self.train)}va{fmt(self.val)}te{fmt(self.test)}"


def default_split(num_classes: int) -> ClassSplit:
    """First half of the classes for meta-train, second half for meta-test."""
    half = num_classes // 2
    return ClassSplit(tuple(range(half)), (), tuple(range(half, num_classes)))


def dataset_split(dataset: str, test_dataset: str | None = None) -> ClassSplit:
    """The default split of a named dataset; ``test_dataset``: leave that dataset out (``mixed`` only).

    Args:
        dataset: mnist, fmnist, cifar10 (:func:`default_split`) or mixed (class-disjoint,
            :data:`MIXED_PARTS` of every source dataset).
        test_dataset: with ``mixed``, the source dataset whose ten classes form meta-test; the
            others give meta-train and meta-val (:data:`LODO_PARTS`).

    Returns:
        The ClassSplit (labels of ``dataset``).
    """
    if dataset != MIXED:
        if test_dataset is not None:
            raise ConfigError(
                f"--test-dataset needs --dataset mixed (got --dataset {dataset}); a single dataset "
                "holds out classes with --test-classes"
            )
        return default_split(NUM_CLASSES[dataset])
    offsets = class_offsets(MIXED)

    def pick(sources: Sequence[str], local: Sequence[int]) -> tuple[int, ...]:
        return tuple(offsets[s] + c for s in sources for c in local)

    if test_dataset is None:
        return ClassSplit(*(pick(SOURCES, MIXED_PARTS[p]) for p in ("train", "val", "test")))
    if test_dataset not in SOURCES:
        raise ConfigError(
            f"unknown --test-dataset {test_dataset!r}; choose one of {', '.join(SOURCES)}"
        )
    rest = [s for s in SOURCES if s != test_dataset]
    return ClassSplit(
        pick(rest, LODO_PARTS["train"]),
        pick(rest, LODO_PARTS["val"]),
        pick([test_dataset], range(NUM_CLASSES[test_dataset])),
    )


def _cls(classes: Sequence[int]) -> Tensor:
    return torch.tensor(list(classes), dtype=torch.int64)


def split_indices(
    labels: Tensor,
    is_test: Tensor,
    split: ClassSplit,
    *,
    keep_image_split: bool = False,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Image indices (sorted, int64) of each part ``train`` / ``val`` / ``test``.

    Default: torchvision's train and test images pooled, split by class only. ``keep_image_split``:
    meta-train and meta-val use torchvision's train images, meta-test its test images. With no
    ``val`` classes, meta-val is a seeded held-out ``VAL_FRACTION`` of each meta-train class's
    images (removed from meta-train). An empty class list gives an empty part.
    """
    in_train = torch.isin(labels, _cls(split.train))
    in_test = torch.isin(labels, _cls(split.test))
    pool_train = in_train & ~is_test if keep_image_split else in_train
    pool_test = in_test & is_test if keep_image_split else in_test
    train_idx = pool_train.nonzero().flatten()
    empty = torch.zeros(0, dtype=torch.int64)
    if split.val:
        in_val = torch.isin(labels, _cls(split.val))
        val_idx = (in_val & ~is_test if keep_image_split else in_val).nonzero().flatten()
    elif split.train:  # held-out images of the meta-train classes, per class, seeded
        g = torch.Generator().manual_seed(seed)
        keep, held = [empty], [empty]
        for c in split.train:
            idx = train_idx[labels[train_idx] == c]
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_val = int(round(VAL_FRACTION * len(idx)))
            held.append(idx[:n_val])
            keep.append(idx[n_val:])
        train_idx, val_idx = torch.cat(keep).sort().values, torch.cat(held).sort().values
    else:
        val_idx = empty
    return {"train": train_idx, "val": val_idx, "test": pool_test.nonzero().flatten()}
