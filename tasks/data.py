"""Loading MNIST, Fashion-MNIST and CIFAR-10 through torchvision's own dataset classes.

Data root: ``--data-root`` flag, else ``$GWNMO_DATA``, else ``<user cache>/gwnmo-meta/data`` (``$XDG_CACHE_HOME``
or ``~/.cache``, see :mod:`gwnmo_meta.io.paths`); inside it
the usual torchvision layout (``MNIST/raw``, ``FashionMNIST/raw``, ``cifar-10-batches-py``).
torchvision downloads only with ``download=True``. Anything missing or unreadable is a one-line
:class:`~gwnmo_meta.errors.DataError` that names the folder searched and the flag that fixes it.

``mixed`` pools the 30 classes of the three datasets (:func:`pool_images`): labels 0-9 MNIST,
10-19 Fashion-MNIST, 20-29 CIFAR-10 (learn2learn ``UnionMetaDataset``'s offsets), every image
3×32×32 uint8 (grey images zero-padded 28→32 and replicated to 3 channels, exactly what
:func:`~gwnmo_meta.tasks.backbones.canonical` does), classes named ``dataset:class``.

CIFAR-10: torchvision checks the md5 of every original batch file. A re-packed or partial copy
(e.g. the offline subsets) fails that check; ``skip_integrity_check=True`` (CLI
``--skip-integrity-check``) loads it anyway through :class:`CIFAR10Repacked`, which only requires
the batch files to exist and reads them exactly as torchvision does. It is never applied silently.
CIFAR-10's format is a Python pickle, which can run code when unpickled: the md5 check guarantees
torchvision unpickles only the original files; without it, every file is first unpickled by
:func:`safe_pickle_load`, which refuses anything but NumPy arrays, before torchvision reads it.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from gwnmo_meta.errors import DataError
from gwnmo_meta.io.paths import data_root
from gwnmo_meta.registry import DATASETS

NUM_CLASSES = {name: info.num_classes for name, info in DATASETS.items()}
MIXED = "mixed"  # the pool (registry: DatasetInfo.sources)
SOURCES = DATASETS[MIXED].sources  # the datasets read from disk, in pool order
# the folder below the data root that torchvision reads for each dataset
FOLDERS = {
    "mnist": Path("MNIST") / "raw",
    "fmnist": Path("FashionMNIST") / "raw",
    "cifar10": Path("cifar-10-batches-py"),
}
_CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
_MNIST_FILES = [
    f"{p}-{k}-idx{d}-ubyte" for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))
]


@dataclass
class LabeledImages:
    """All images of a dataset, torchvision's train and test splits pooled (``is_test`` marks the latter).

    ``class_names``: torchvision's names; for ``mixed`` the ``dataset:class`` names.
    """

    name: str
    images: Tensor  # uint8 [N, C, H, W]
    labels: Tensor  # int64 [N]
    is_test: Tensor  # bool [N]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """sha1 (12 hex digits) of every pixel, label and split flag: keys the on-disk caches."""
        h = hashlib.sha1()
        for t in (self.images, self.labels, self.is_test):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:12]


def resolve_data_root(flag: str | Path | None = None) -> Path:
    """``--data-root`` flag, else ``$GWNMO_DATA``, else ``$XDG_CACHE_HOME/gwnmo-meta/data``.

    (``~/.cache/gwnmo-meta/data`` without ``XDG_CACHE_HOME``; see :mod:`gwnmo_meta.io.paths`.)
    """
    return data_root(flag)


def check_dataset(name: str) -> str:
    """``name`` if it is a registered dataset, else a one-line ConfigError."""
    return DATASETS.check(name).name


def class_offsets(dataset: str) -> dict[str, int]:
    """Label of each source dataset's class 0 in ``dataset`` (``{"mnist": 0}``; for mixed 0/10/20)."""
    sources = SOURCES if dataset == MIXED else (check_dataset(dataset),)
    starts = [sum(NUM_CLASSES[s] for s in sources[:i]) for i in range(len(sources))]
    return dict(zip(sources, starts, strict=True))


def class_names(dataset: str) -> list[str]:
    """User-facing class names ``dataset:class`` by label, e.g. ``class_names("mixed")[27] == "cifar10:7"``."""
    return [f"{s}:{c}" for s in class_offsets(dataset) for c in range(NUM_CLASSES[s])]


def pool_images(parts: list[LabeledImages]) -> LabeledImages:
    """One ``mixed`` dataset from the source datasets, in :data:`SOURCES` order.

    Labels are offset as learn2learn's ``UnionMetaDataset`` offsets them (0-9 the first dataset,
    10-19 the second, ...) but keep each dataset's class order (UnionMetaDataset renumbers by first
    appearance), so ``cifar10:7`` is label 27; grey 28×28 images are zero-padded to 32×32 and replicated to 3
    channels (uint8), so the backbones see exactly the images a single dataset gives them.
    """
    if [p.name for p in parts] != list(SOURCES):
        raise ValueError(f"pool_images needs {SOURCES} in this order")
    offsets = class_offsets(MIXED)
    images = []
    for p in parts:
        x = p.images
        if x.shape[-1] == 28:
            x = torch.nn.functional.pad(x, (2, 2, 2, 2))
        images.append(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
    return LabeledImages(
        name=MIXED,
        images=torch.cat(images).contiguous(),
        labels=torch.cat([p.labels + offsets[p.name] for p in parts]),
        is_test=torch.cat([p.is_test for p in parts]),
        class_names=class_names(MIXED),
    )


# What CIFAR-10's python pickles may name: NumPy arrays and dtypes (numpy 1 and 2 module paths)
# and the codec that pickles bytes under protocol 2. Anything else (os.system, ...) is refused.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def safe_pickle_load(fh: IO[bytes]) -> Any:
    """Unpickle ``fh`` (latin1 strings, as torchvision does) allowing only NumPy arrays.

    Raises:
        DataError: the pickle names any other class or function (nothing is run).
    """
    try:
        return _ArraysOnly(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{getattr(fh, 'name', 'pickle')} is not a plain CIFAR-10 batch ({exc}); "
            "a hostile or damaged data file, not loaded"
        ) from None


def _repacked_class() -> type:
    from torchvision.datasets import CIFAR10

    class CIFAR10Repacked(CIFAR10):
        """torchvision's CIFAR10 for a re-packed copy: batch files must exist; their md5 is not checked.

        The pickles are read by torchvision's own ``__init__`` (same keys, same N×3072 layout); only
        the md5 comparison of ``_check_integrity`` / ``_load_meta`` is replaced by an existence check.
        Used only with the explicit ``skip_integrity_check=True`` (``--skip-integrity-check``).
        """

        def _check_integrity(self) -> bool:  # torchvision hook, runs before it unpickles
            base = Path(self.root) / self.base_folder
            files = [base / name for name, _ in self.train_list + self.test_list]
            if not all(f.is_file() for f in files):
                return False
            for f in files:  # unverified pickles: only arrays, lists, dicts and strings
                with open(f, "rb") as fh:
                    safe_pickle_load(fh)
            return True

        def _load_meta(self) -> None:  # torchvision hook, same as upstream minus the md5
            path = Path(self.root) / self.base_folder / self.meta["filename"]
            if not path.is_file():
                raise RuntimeError(f"Dataset metadata file {path} not found")
            with open(path, "rb") as fh:
                self.classes = safe_pickle_load(fh)[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR10Repacked


def _torchvision_split(
    name: str, root: Path, train: bool, download: bool, skip_integrity_check: bool
) -> Any:  # a torchvision dataset (torchvision is untyped)
    from torchvision import datasets

    if name == "mnist":
        return datasets.MNIST(str(root), train=train, download=download)
    if name == "fmnist":
        return datasets.FashionMNIST(str(root), train=train, download=download)
    cls = _repacked_class() if skip_integrity_check else datasets.CIFAR10
    return cls(str(root), train=train, download=download)


def _files_present(name: str, root: Path) -> bool:
    folder = root / FOLDERS[name]
    files = _CIFAR_FILES + ["batches.meta"] if name == "cifar10" else _MNIST_FILES
    # torchvision also accepts MNIST in its processed (.pt) form; count that as present too
    if name != "cifar10" and (folder.parent / "processed").is_dir():
        return True
    return all((folder / f).is_file() for f in files)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _data_error(
    name: str, root: Path, download: bool, skip_integrity_check: bool, exc: BaseException
) -> DataError:
    folder = root / FOLDERS[name]
    present = _files_present(name, root)
    if name == "cifar10" and present and not skip_integrity_check and isinstance(exc, RuntimeError):
        return DataError(
            f"CIFAR-10 in {folder} fails torchvision's md5 integrity check; for a re-packed or partial copy "
            "pass --skip-integrity-check"
        )
    if download and not present:
        return DataError(
            f"could not download {name} into {folder} ({_one_line(exc)}); without network, copy the data there "
            "or pass --data-root DIR pointing at an existing copy"
        )
    if not present:
        return DataError(
            f"{name} not found in {folder} (data root {root}); pass --data-root DIR pointing at a folder "
            f"holding {FOLDERS[name].as_posix()}, or --download"
        )
    return DataError(
        f"cannot read {name} in {folder}: {_one_line(exc)}; pass --data-root DIR with an intact copy, or --download"
    )


def _as_tensors(ds: Any) -> tuple[Tensor, Tensor]:
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR10: N×H×W×C uint8
        images = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: N×H×W uint8 tensor
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images, labels


def load_images(
    name: str, root: str | Path, *, download: bool = False, skip_integrity_check: bool = False
) -> LabeledImages:
    """Both torchvision splits of ``name`` from ``root`` (pooled; ``is_test`` marks torchvision's test split).

    ``mixed``: the three datasets pooled by :func:`pool_images`. Raises a one-line
    :class:`DataError` when the data is missing (naming the folder searched and
    ``--data-root`` / ``--download``), when a download fails, or when CIFAR-10 fails torchvision's
    md5 check without ``skip_integrity_check`` (naming ``--skip-integrity-check``).
    """
    check_dataset(name)
    root = Path(root).expanduser()
    if name == MIXED:
        opts = dict(download=download, skip_integrity_check=skip_integrity_check)
        return pool_images([load_images(s, root, **opts) for s in SOURCES])
    splits = []
    for train in (True, False):
        try:
            splits.append(_torchvision_split(name, root, train, download, skip_integrity_check))
        except (
            RuntimeError,
            OSError,
            ValueError,
            EOFError,
            KeyError,
            IndexError,
            AssertionError,  # torchvision asserts on IDX headers (e.g. a wrong magic number)
            pickle.UnpicklingError,
        ) as exc:
            raise _data_error(name, root, download, skip_integrity_check, exc) from None
    (xtr, ytr), (xte, yte) = (_as_tensors(s) for s in splits)
    images, labels = torch.cat([xtr, xte]), torch.cat([ytr, yte])
    n = NUM_CLASSES[name]
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= n:
        raise DataError(
            f"{name} in {root / FOLDERS[name]} has labels outside 0-{n - 1} or no images; is it the right dataset?"
        )
    return LabeledImages(
        name=name,
        images=images,
        labels=labels,
        is_test=torch.cat(
            [torch.zeros(len(ytr), dtype=torch.bool), torch.ones(len(yte), dtype=torch.bool)]
        ),
        class_names=list(splits[0].classes),
    )
