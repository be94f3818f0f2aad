"""Class splits: disjoint meta-train / meta-val / meta-test classes, and which images each part uses.

Default for a 10-class dataset: meta-train classes 0-4, meta-test classes 5-9. Three disjoint
5-class sets do not fit in 10 classes, so by default meta-val draws its tasks from the meta-train
classes but on a held-out 20% of their images (never used for meta-training; seeded); it serves
only checkpoint selection. Pass explicit ``val`` classes for class-disjoint validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gwnmo_meta.errors import ConfigError

VAL_FRACTION = 0.2


def parse_classes(text: str) -> tuple[int, ...]:
    """``"0-4"`` → (0,1,2,3,4); ``"0,2,5-7"`` → (0,2,5,6,7)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"cannot parse class list {text!r}; use e.g. 0-4 or 0,2,5-7") from None
    if not out:
        raise ConfigError(f"empty class list {text!r}")
    if len(set(out)) != len(out):
        raise ConfigError(f"class list {text!r} repeats a class")
    return tuple(out)


@dataclass(frozen=True)
class ClassSplit:
    """Meta-train, meta-val and meta-test classes (``val`` empty: held-out images of ``train``)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @classmethod
    def from_strings(
        cls, train: str | None, val: str | None, test: str | None, num_classes: int = 10
    ) -> ClassSplit:
        d = default_split(num_classes)
        return cls(
            parse_classes(train) if train else d.train,
            parse_classes(val) if val else (),
            parse_classes(test) if test else d.test,
        )

    def validate(self, num_classes: int) -> ClassSplit:
        """ConfigError for classes outside 0..num_classes-1, empty train/test lists, or overlaps."""
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
                    raise ConfigError(
                        f"--{a}-classes and --{b}-classes overlap on classes {common}"
                    )
        return self

    def key(self) -> str:
        fmt = lambda cs: "".join(str(c) + "." for c in cs) or "-"  # noqa: E731
        return f"tr{fmt(self.train)}va{fmt(self.val)}te{fmt(self.test)}"


def default_split(num_classes: int) -> ClassSplit:
    """First half of the classes for meta-train, second half for meta-test."""
    half = num_classes // 2
    return ClassSplit(tuple(range(half)), (), tuple(range(half, num_classes)))


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
