"""Loading MNIST, Fashion-MNIST and CIFAR-10 through torchvision's own dataset classes."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from gwnmo_meta.errors import ConfigError, DataError

DATASETS = ("mnist", "fmnist", "cifar10")
NUM_CLASSES = {"mnist": 10, "fmnist": 10, "cifar10": 10}
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "gwnmo-meta" / "data"


@dataclass
class LabeledImages:
    """All images of a dataset, torchvision's train and test splits pooled (``is_test`` marks the latter)."""

    name: str
    images: Tensor  # uint8 [N, C, H, W]
    labels: Tensor  # int64 [N]
    is_test: Tensor  # bool [N]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_data_root(flag: Optional[str | Path] = None) -> Path:
    """``--data-root`` flag, else ``$GWNMO_DATA``, else ``~/.cache/gwnmo-meta/data``."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("GWNMO_DATA")
    return Path(env).expanduser() if env else DEFAULT_DATA_ROOT


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def _cifar_class(skip_integrity_check: bool):
    from torchvision.datasets import CIFAR10

    if not skip_integrity_check:
        return CIFAR10

    class CIFAR10Repacked(CIFAR10):
        """CIFAR10 whose batch files only need to exist (explicit ``--skip-integrity-check``)."""

        def _check_integrity(self) -> bool:  # noqa: D401 - torchvision hook
            base = Path(self.root) / self.base_folder
            return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = Path(self.root) / self.base_folder / self.meta["filename"]
            if not path.is_file():
                raise RuntimeError(f"Dataset metadata file {path} not found")
            with open(path, "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR10Repacked


def _torchvision_split(name: str, root: Path, train: bool, download: bool, skip_integrity_check: bool):
    from torchvision import datasets

    if name == "mnist":
        return datasets.MNIST(str(root), train=train, download=download)
    if name == "fmnist":
        return datasets.FashionMNIST(str(root), train=train, download=download)
    return _cifar_class(skip_integrity_check)(str(root), train=train, download=download)


def _as_tensors(ds) -> tuple[Tensor, Tensor]:
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR10: N×H×W×C uint8
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: N×H×W uint8 tensor
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images, labels


def load_images(name: str, root: str | Path, *, download: bool = False, skip_integrity_check: bool = False) -> LabeledImages:
    """Both torchvision splits of ``name`` from ``root``; a missing dataset is a one-line ``DataError``."""
    check_dataset(name)
    root = Path(root)
    splits = []
    for train in (True, False):
        try:
            splits.append(_torchvision_split(name, root, train, download, skip_integrity_check))
        except RuntimeError as exc:
            msg = str(exc)
            if name == "cifar10" and "corrupted" in msg and not skip_integrity_check:
                raise DataError(
                    f"CIFAR-10 in {root} fails torchvision's md5 integrity check; for a re-packed or partial copy "
                    "pass --skip-integrity-check"
                ) from None
            hint = "download failed (no network?)" if download else "not found"
            raise DataError(f"{name} {hint} in data root {root}; pass --data-root DIR pointing at it or --download") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {name} in data root {root}: {exc}; pass --data-root DIR or --download") from None
    (xtr, ytr), (xte, yte) = (_as_tensors(s) for s in splits)
    return LabeledImages(
        name=name,
        images=torch.cat([xtr, xte]),
        labels=torch.cat([ytr, yte]),
        is_test=torch.cat([torch.zeros(len(ytr), dtype=torch.bool), torch.ones(len(yte), dtype=torch.bool)]),
        class_names=list(splits[0].classes),
    )
