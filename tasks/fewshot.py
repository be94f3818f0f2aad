"""Few-shot data of one run: cached backbone features, class split, and per-part episode samplers.

``prepare_fewshot(cfg)`` loads the dataset through torchvision, computes (or loads from the disk
cache) the frozen backbone's features of *every* image once, L2-normalises them, and splits the
images into meta-train / meta-val / meta-test parts by class. ``FewShotData.sampler(part, spec,
seed, device)`` then gives a seeded learn2learn episode stream over one part; sampling is tensor
indexing. See docs/TASKS.md.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from gwnmo_meta.errors import ConfigError, DataError
from gwnmo_meta.io.atomic import atomic_torch_save, remove_stale_temps
from gwnmo_meta.io.paths import cache_dir, cache_source
from gwnmo_meta.tasks.backbones import (
    CONV4_EPOCHS,
    CONV4_MAX_PER_CLASS,
    check_backbone,
    extract,
    pretrain_conv4,
    resnet18_imagenet,
    resnet_input,
)
from gwnmo_meta.tasks.data import (
    MIXED,
    NUM_CLASSES,
    SOURCES,
    LabeledImages,
    check_dataset,
    load_images,
    resolve_data_root,
)
from gwnmo_meta.tasks.episodes import EpisodeSampler, TaskSpec
from gwnmo_meta.tasks.splits import (
    ClassSplit,
    dataset_split,
    default_split,
    format_classes,
    split_indices,
)

PARTS = ("train", "val", "test")
CACHE_VERSION = 2  # bump when backbone training or feature extraction changes


@dataclass
class FewShotConfig:
    """Where the images come from, how classes are split and which frozen backbone E is used.

    ``backbone_dataset`` is the dataset whose meta-train classes pre-train conv4 (default:
    ``dataset``), with ``backbone_split`` (default: that dataset's default split). Cross-dataset
    protocol: meta-train on A (``dataset=A``), meta-test on B with ``dataset=B,
    backbone_dataset=A``; then, unless ``split`` is given, *all* of B's classes form B's meta-test
    part (its train/val parts are empty) and the features come from A's backbone.
    ``test_dataset``: leave-one-dataset-out split of ``mixed`` (whichever of ``dataset`` and
    ``backbone_dataset`` is mixed); without an explicit split, that dataset's classes are
    meta-test and the backbone is pre-trained on the other datasets' meta-train classes.
    ``device``: where the backbone runs (``prepare_fewshot``'s ``device`` argument overrides it).
    """

    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = False
    skip_integrity_check: bool = False
    backbone: str = "conv4"
    backbone_dataset: str | None = None
    backbone_split: ClassSplit | None = None
    split: ClassSplit | None = None
    test_dataset: str | None = None
    keep_image_split: bool = False
    seed: int = 0
    cache_dir: str | None = None
    progress: bool = True
    device: str | None = None
    pretrain_epochs: int = (
        CONV4_EPOCHS  # conv4 pre-training epochs (part of the weights' cache key)
    )
    expected_fingerprint: str | None = None  # a resumed run's data: other images are refused


@dataclass
class FewShotData:
    """Features of every image of a dataset plus the image indices of each part."""

    features: Tensor  # float32 [N, D], CPU, rows L2-normalised
    labels: Tensor  # int64 [N], original class ids
    indices: dict[str, Tensor]  # part → sorted int64 image indices
    split: ClassSplit
    name: str = "synthetic"
    is_test: Tensor | None = field(default=None, repr=False)
    fingerprint: str | None = None  # of the images (``LabeledImages.fingerprint``), if loaded

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def classes(self, part: str) -> tuple[int, ...]:
        """Original class ids present in ``part``."""
        return tuple(sorted(set(self.labels[self.indices[part]].tolist())))

    def class_names(self, part: str) -> list[str]:
        """``dataset:class`` names of the classes in ``part`` (plain ids for synthetic data)."""
        return format_classes(self.classes(part), self.name if self.name in NUM_CLASSES else None)

    def sampler(
        self, part: str, spec: TaskSpec, seed: int, device: torch.device | str = "cpu"
    ) -> EpisodeSampler:
        """A seeded episode stream over the ``part`` (train/val/test) images."""
        if part not in PARTS:
            raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        if len(self.indices[part]) == 0:
            raise ConfigError(f"the meta-{part} part of {self.name} is empty")
        return EpisodeSampler(
            self.features,
            self.labels,
            self.indices[part],
            spec,
            seed,
            device,
            part=f"meta-{part} of {self.name}",
            dataset=self.name if self.name in NUM_CLASSES else None,
        )


def _digest(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]


def _atomic_save(obj: object, path: Path) -> None:
    remove_stale_temps(path.parent)  # left by a writer killed mid-write
    atomic_torch_save(obj, path)


def check_cache_dir(folder: Path) -> Path:
    """``folder`` (the cache) if it is, or can be made, a writable folder; else ``ConfigError``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"cannot use the cache folder {folder} ({cache_source(folder)}): {exc.strerror or exc}"
        ) from None
    return folder


def _try_load(path: Path) -> object | None:
    """A cached object, or None when absent or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a truncated/corrupt cache file is just recomputed
        return None


def conv4_key(
    dataset: str,
    split: ClassSplit,
    keep_image_split: bool,
    seed: int,
    fingerprint: str,
    epochs: int = CONV4_EPOCHS,
) -> str:
    """Cache key of a pre-trained conv4: dataset, meta-train (and val) classes, image split, seed, data, epochs."""
    digest = _digest(
        CACHE_VERSION,
        split.train,
        split.val,
        keep_image_split,
        seed,
        fingerprint,
        epochs,
        CONV4_MAX_PER_CLASS,
    )
    return f"conv4-{dataset}-{digest}"


def _conv4(
    cfg: FewShotConfig, root: Path, device: torch.device, target: LabeledImages
) -> tuple[torch.nn.Module, str]:
    """conv4 pre-trained on the backbone dataset's meta-train images only; cached on disk."""
    from gwnmo_meta.tasks.backbones import Conv4

    src = cfg.backbone_dataset or cfg.dataset
    split = cfg.backbone_split or _default_split(cfg, src)
    split.validate(NUM_CLASSES[src], src)
    imgs = (
        target
        if src == cfg.dataset
        else load_images(
            src, root, download=cfg.download, skip_integrity_check=cfg.skip_integrity_check
        )
    )
    key = conv4_key(
        src, split, cfg.keep_image_split, cfg.seed, imgs.fingerprint(), cfg.pretrain_epochs
    )
    path = cache_dir(cfg.cache_dir) / "backbones" / f"{key}.pt"
    net = Conv4()
    state = _try_load(path)
    cached = False  # a missing or unusable cache entry is recomputed
    if isinstance(state, Mapping):
        try:
            net.load_state_dict(state)
            cached = True
        except (TypeError, RuntimeError, AttributeError, KeyError):
            pass
    if not cached:
        # never pre-train on images the meta-val part holds out: only meta-train images of meta-train classes
        parts = split_indices(
            imgs.labels, imgs.is_test, split, keep_image_split=cfg.keep_image_split, seed=cfg.seed
        )
        tr = parts["train"]
        net = pretrain_conv4(
            imgs.images[tr],
            imgs.labels[tr],
            split.train,
            seed=cfg.seed,
            progress=cfg.progress,
            epochs=cfg.pretrain_epochs,
            device=device,
        )
        _atomic_save(net.state_dict(), path)
    net = net.eval().to(device)
    return net, key


def _default_split(cfg: FewShotConfig, dataset: str) -> ClassSplit:
    return dataset_split(dataset, cfg.test_dataset if dataset == MIXED else None)


def _load(cfg: FewShotConfig) -> LabeledImages:
    root = resolve_data_root(cfg.data_root)
    imgs = load_images(
        cfg.dataset, root, download=cfg.download, skip_integrity_check=cfg.skip_integrity_check
    )
    expected = cfg.expected_fingerprint
    if expected is not None and imgs.fingerprint() != expected:
        raise DataError(
            f"the {cfg.dataset} data in {root} are not those the run was trained on (fingerprint "
            f"{imgs.fingerprint()}, the run's {expected}); resume with the run's --data-root, or "
            "pass --allow-data-change"
        )
    return imgs


def _features(cfg: FewShotConfig, device: torch.device) -> tuple[LabeledImages, Tensor]:
    """(images with labels, L2-normalised features [N, D]) of ``cfg.dataset``; conv4/resnet features cached on disk.

    Building networks draws from torch's global RNG; that state is restored afterwards, so loading
    data (from the cache or not) never changes a run's random stream.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _features_impl(cfg, device, _load(cfg))


def _features_impl(
    cfg: FewShotConfig, device: torch.device, imgs: LabeledImages
) -> tuple[LabeledImages, Tensor]:
    root = resolve_data_root(cfg.data_root)
    desc = f"{cfg.dataset} features ({cfg.backbone})"
    if cfg.backbone == "none":  # raw canonical pixels: cheap, not worth a disk cache
        feats = extract(
            lambda x: x.flatten(1), imgs.images, "cpu", progress=cfg.progress, desc=desc
        )
    else:
        check_cache_dir(cache_dir(cfg.cache_dir))  # before any backbone is trained
        fn: Callable[[Tensor], Tensor] | None
        if cfg.backbone == "resnet18-imagenet":
            key = f"resnet18-imagenet-v{CACHE_VERSION}"
            fn = None
        else:
            fn, key = _conv4(cfg, root, device, imgs)
        path = (
            cache_dir(cfg.cache_dir) / "features" / f"{cfg.dataset}-{imgs.fingerprint()}-{key}.pt"
        )
        cached = _try_load(path)
        if isinstance(cached, Tensor) and cached.dim() == 2 and len(cached) == len(imgs.labels):
            feats = cached
        else:
            if fn is None:
                net = resnet18_imagenet().to(device)
                fn = lambda x: net(resnet_input(x))  # noqa: E731
            feats = extract(fn, imgs.images, device, progress=cfg.progress, desc=desc)
            _atomic_save(feats, path)
    # Unit-norm rows (as in SimpleShot): one scale for every backbone and dataset, so inner step
    # sizes mean the same thing everywhere.
    return imgs, torch.nn.functional.normalize(feats.float(), dim=1)


def resolve_split(cfg: FewShotConfig, num_classes: int) -> ClassSplit:
    """The class split of ``cfg.dataset``: explicit, cross-dataset (all classes meta-test), or default."""
    cross = cfg.backbone_dataset not in (None, cfg.dataset)
    if cfg.split is not None:
        return cfg.split.validate(num_classes, cfg.dataset)
    if cross:  # every class of the target dataset is new to the meta-trained learner
        return ClassSplit((), (), tuple(range(num_classes)))
    return _default_split(cfg, cfg.dataset)


def _check(cfg: FewShotConfig) -> ClassSplit:
    """Validate ``cfg`` before any expensive work; the class split of ``cfg.dataset``."""
    check_dataset(cfg.dataset)
    check_backbone(cfg.backbone)
    if cfg.backbone_dataset is not None:
        check_dataset(cfg.backbone_dataset)
    if cfg.pretrain_epochs <= 0:
        raise ConfigError(f"pretrain_epochs must be positive, got {cfg.pretrain_epochs}")
    src = cfg.backbone_dataset or cfg.dataset
    if cfg.test_dataset is not None and cfg.test_dataset not in SOURCES:
        raise ConfigError(
            f"unknown --test-dataset {cfg.test_dataset!r}; choose one of {', '.join(SOURCES)}"
        )
    if cfg.test_dataset is not None and MIXED not in (cfg.dataset, src):
        raise ConfigError(f"--test-dataset needs --dataset mixed (got --dataset {src})")
    split = resolve_split(cfg, NUM_CLASSES[cfg.dataset])
    (cfg.backbone_split or _default_split(cfg, src)).validate(NUM_CLASSES[src], src)
    return split


def prepare_fewshot(cfg: FewShotConfig, device: torch.device | str | None = None) -> FewShotData:
    """Load ``cfg.dataset``, compute (or load cached) features, split classes into parts.

    Args:
        cfg: dataset, backbone, class split and cache settings.
        device: where the backbone runs (default: ``cfg.device``, else the CPU).

    Returns:
        L2-normalised features of every image (on the CPU), labels and the image indices of the
        meta-train / meta-val / meta-test parts; ``.sampler(part, spec, seed)`` draws episodes.

    Raises:
        ConfigError, DataError: unknown names, a bad split, missing or unreadable data.
    """
    split = _check(cfg)
    device = torch.device(device if device is not None else (cfg.device or "cpu"))
    imgs, feats = _features(cfg, device)
    parts = split_indices(
        imgs.labels, imgs.is_test, split, keep_image_split=cfg.keep_image_split, seed=cfg.seed
    )
    return FewShotData(
        feats, imgs.labels, parts, split, cfg.dataset, imgs.is_test, imgs.fingerprint()
    )


def split_summary(cfg: FewShotConfig, ways: int) -> dict[str, object]:
    """Classes, image count and number of distinct ``ways``-way class sets of each part; labels only.

    No backbone is built or pre-trained. Returns ``{"dataset", "test_dataset", "ways",
    "val_from_train_classes", "parts": {"train"|"val"|"test": {"classes": [names], "images": N,
    "class_sets": C(classes, ways)}}}``; ``val_from_train_classes`` marks a meta-val part made of
    held-out images of the meta-train classes.
    """
    if ways <= 0:
        raise ConfigError(f"--ways must be positive, got {ways}")
    split = _check(cfg)
    imgs = _load(cfg)
    idx = split_indices(
        imgs.labels, imgs.is_test, split, keep_image_split=cfg.keep_image_split, seed=cfg.seed
    )
    parts = {}
    for part in PARTS:
        classes = sorted(set(imgs.labels[idx[part]].tolist()))
        parts[part] = {
            "classes": format_classes(classes, cfg.dataset),
            "images": len(idx[part]),
            "class_sets": math.comb(len(classes), ways),
        }
    return {
        "dataset": cfg.dataset,
        "test_dataset": cfg.test_dataset,
        "ways": ways,
        "val_from_train_classes": not split.val and bool(split.train),
        "parts": parts,
    }


def prepare_images(cfg: FewShotConfig) -> FewShotData:
    """``cfg.dataset``'s images as episode "features" for ``--adapt all``: flat canonical pixels.

    Each row is the image in the canonical format conv4 is pre-trained on (3×32×32, values in
    [-1, 1], see :func:`~gwnmo_meta.tasks.backbones.canonical`), flattened to 3072 values and not
    normalised further; ``cfg.backbone`` is not used. Same class split and episode samplers as
    :func:`prepare_fewshot` (so the same tasks for the same seed), ``mixed`` included.
    """
    split = _check(cfg)
    imgs = _load(cfg)
    feats = extract(
        lambda x: x.flatten(1), imgs.images, "cpu", progress=cfg.progress, desc="images"
    )
    parts = split_indices(
        imgs.labels, imgs.is_test, split, keep_image_split=cfg.keep_image_split, seed=cfg.seed
    )
    return FewShotData(
        feats, imgs.labels, parts, split, cfg.dataset, imgs.is_test, imgs.fingerprint()
    )


def classic_features(
    *,
    dataset: str,
    data_root: str | None,
    download: bool,
    skip_integrity_check: bool,
    backbone: str,
    seed: int,
    device: torch.device,
    progress: bool = True,
    cache: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Features of torchvision's train and test splits for classic (non-few-shot) training.

    conv4 is pre-trained on the default meta-train classes' *train-split* images only
    (``keep_image_split``), so no test image ever shaped the backbone.
    """
    return load_classic_data(
        dataset=dataset,
        data_root=data_root,
        download=download,
        skip_integrity_check=skip_integrity_check,
        backbone=backbone,
        seed=seed,
        device=device,
        progress=progress,
        cache=cache,
    )[0]


def load_classic_data(
    *,
    dataset: str,
    data_root: str | None,
    download: bool,
    skip_integrity_check: bool,
    backbone: str,
    seed: int,
    device: torch.device,
    progress: bool = True,
    cache: str | None = None,
    expect_data: str | None = None,
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], str]:
    """:func:`classic_features` and the images' fingerprint; ``expect_data``: the fingerprint
    the images must have (a resumed run's), checked before any backbone is trained."""
    check_dataset(dataset)
    check_backbone(backbone)
    cfg = FewShotConfig(
        dataset=dataset,
        data_root=data_root,
        download=download,
        skip_integrity_check=skip_integrity_check,
        backbone=backbone,
        keep_image_split=True,
        seed=seed,
        cache_dir=cache,
        progress=progress,
        expected_fingerprint=expect_data,
    )
    imgs, feats = _features(cfg, torch.device(device))
    tr, te = ~imgs.is_test, imgs.is_test
    return (feats[tr], imgs.labels[tr], feats[te], imgs.labels[te]), imgs.fingerprint()


def synthetic_fewshot(
    num_classes: int = 10,
    per_class: int = 40,
    dim: int = 16,
    seed: int = 0,
    noise: float = 1.0,
    split: ClassSplit | None = None,
) -> FewShotData:
    """Class-separable Gaussian features in memory (for tests and quick experiments); default split."""
    if min(num_classes, per_class, dim) <= 0:
        raise ConfigError("synthetic_fewshot needs positive num_classes, per_class and dim")
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 2.0
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    feats = centers[labels] + noise * torch.randn(len(labels), dim, generator=g)
    split = (split or default_split(num_classes)).validate(num_classes)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    parts = split_indices(labels, is_test, split, seed=seed)
    return FewShotData(feats, labels, parts, split, "synthetic", is_test)
