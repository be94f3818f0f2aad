"""Shared fixtures: tiny datasets in torchvision's on-disk formats, an isolated cache, tiny episodes."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

PER_CLASS_TRAIN = 14
PER_CLASS_TEST = 8
CIFAR_PER_CLASS_BATCH = 3  # per class in each of data_batch_1..5 (15 per class in all)


def _class_images(
    rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Noise plus a class-specific pattern, so a backbone has something to learn."""
    patterns = np.random.default_rng(123).integers(0, 255, size=(10, *shape))
    noise = rng.integers(0, 60, size=(len(labels), *shape))
    return np.clip(0.7 * patterns[labels] + noise, 0, 255).astype(np.uint8)


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x803, n, h, w) + images.tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes()
    )


def _labels(per_class: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    return labels


def write_tiny_datasets(root: Path, seed: int = 0) -> Path:
    """MNIST and FashionMNIST as raw IDX files, CIFAR-10 as pickled batches (10 classes each), under ``root``.

    Layout as torchvision expects it: ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
    the same under ``root/FashionMNIST/raw``, and ``root/cifar-10-batches-py/{data_batch_1..5,
    test_batch,batches.meta}`` (their md5 differs from the originals: load CIFAR with
    ``skip_integrity_check=True``). Images are noise plus a class pattern; ``seed`` varies the noise.
    """
    rng = np.random.default_rng(seed)
    for name in ("MNIST", "FashionMNIST"):
        for prefix, per in (("train", PER_CLASS_TRAIN), ("t10k", PER_CLASS_TEST)):
            labels = _labels(per, rng)
            _write_idx(root / name / "raw", prefix, _class_images(rng, labels, (28, 28)), labels)
    cifar = root / "cifar-10-batches-py"
    cifar.mkdir(parents=True, exist_ok=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for _i, name in enumerate(batches):
        per = PER_CLASS_TEST if name == "test_batch" else CIFAR_PER_CLASS_BATCH
        labels = _labels(per, rng)
        data = _class_images(rng, labels, (3, 32, 32)).reshape(len(labels), -1)
        with open(cifar / name, "wb") as fh:
            pickle.dump(
                {"data": data, "labels": labels.tolist(), "batch_label": name, "filenames": []}, fh
            )
    with open(cifar / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 0}, fh)
    return root


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding tiny MNIST, FashionMNIST and CIFAR-10 copies in torchvision's layout."""
    return write_tiny_datasets(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Backbone weights and features go to a temp cache, never to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("gwnmo-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("GWNMO_CACHE", str(path))
    mp.delenv("GWNMO_DATA", raising=False)
    yield path
    mp.undo()


@pytest.fixture(autouse=True)
def _cpu_threads() -> None:
    torch.set_num_threads(2)
