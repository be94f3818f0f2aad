"""Few-shot data of one run: cached backbone features, class split, and per-part episode samplers."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.tasks.backbones import (
    cache_dir,
    check_backbone,
    extract,
    pretrain_conv4,
    resnet18_imagenet,
    resnet_input,
)
from gwnmo_meta.tasks.data import NUM_CLASSES, check_dataset, load_images, resolve_data_root
from gwnmo_meta.tasks.episodes import EpisodeSampler, TaskSpec
from gwnmo_meta.tasks.splits import ClassSplit, default_split, split_indices

PARTS = ("train", "val", "test")


@dataclass
class FewShotConfig:
    """Where the images come from, how classes are split and which frozen backbone E is used.

    ``backbone_dataset`` is the dataset whose meta-train classes pre-train conv4 (default:
    ``dataset``); set it to the training dataset when meta-testing on another one (cross-dataset).
    Cross-dataset meta-test (``dataset != backbone_dataset`` and no explicit split) uses all classes.
    """

    dataset: str = "mnist"
    data_root: Optional[str] = None
    download: bool = False
    skip_integrity_check: bool = False
    backbone: str = "conv4"
    backbone_dataset: Optional[str] = None
    backbone_split: Optional[ClassSplit] = None
    split: Optional[ClassSplit] = None
    keep_image_split: bool = False
    seed: int = 0
    cache_dir: Optional[str] = None
    progress: bool = True


@dataclass
class FewShotData:
    """Features of every image of a dataset plus the image indices of each part."""

    features: Tensor
    labels: Tensor
    indices: dict[str, Tensor]
    split: ClassSplit
    name: str = "synthetic"
    is_test: Optional[Tensor] = field(default=None, repr=False)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def sampler(self, part: str, spec: TaskSpec, seed: int, device: torch.device | str = "cpu") -> EpisodeSampler:
        """A seeded episode stream over the ``part`` (train/val/test) images."""
        if part not in PARTS:
            raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        if len(self.indices[part]) == 0:
            raise ConfigError(f"the {part} part of {self.name} is empty")
        return EpisodeSampler(self.features, self.labels, self.indices[part], spec, seed, device, part=f"meta-{part} of {self.name}")


def _digest(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]


def _backbone_fn(cfg: FewShotConfig, root: Path, device: torch.device):
    """(feature function, cache key) of the configured backbone."""
    if cfg.backbone == "none":
        return (lambda x: x.flatten(1)), "none"
    if cfg.backbone == "resnet18-imagenet":
        net = resnet18_imagenet().to(device)
        return (lambda x: net(resnet_input(x))), "resnet18-imagenet"
    src = cfg.backbone_dataset or cfg.dataset
    split = (cfg.backbone_split or default_split(NUM_CLASSES[src])).validate(NUM_CLASSES[src])
    key = f"conv4-{src}-{_digest(split.train, cfg.keep_image_split, cfg.seed)}"
    path = cache_dir(cfg.cache_dir) / "backbones" / f"{key}.pt"
    from gwnmo_meta.tasks.backbones import Conv4

    net = Conv4()
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu"))
    else:
        imgs = load_images(src, root, download=cfg.download, skip_integrity_check=cfg.skip_integrity_check)
        # never pre-train on images the meta-val part holds out: only meta-train images of meta-train classes
        parts = split_indices(imgs.labels, imgs.is_test, split, keep_image_split=cfg.keep_image_split, seed=cfg.seed)
        mask = torch.zeros_like(imgs.is_test)
        mask[parts["train"]] = True
        net = pretrain_conv4(imgs.images[mask], imgs.labels[mask], split.train, seed=cfg.seed, progress=cfg.progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(net.state_dict(), tmp)
        tmp.replace(path)
    net = net.eval().to(device)
    return net, key


def _features(cfg: FewShotConfig, device: torch.device):
    """(LabeledImages-like labels/is_test, features) for ``cfg.dataset``, cached on disk."""
    root = resolve_data_root(cfg.data_root)
    imgs = load_images(cfg.dataset, root, download=cfg.download, skip_integrity_check=cfg.skip_integrity_check)
    fn, key = _backbone_fn(cfg, root, device)
    fp = _digest(len(imgs.labels), int(imgs.labels.sum()), int(imgs.images[:64].sum()), int(imgs.images[-64:].sum()))
    path = cache_dir(cfg.cache_dir) / "features" / f"{cfg.dataset}-{fp}-{key}.pt"
    if path.exists():
        feats = torch.load(path, map_location="cpu")
    else:
        feats = extract(fn, imgs.images, device, progress=cfg.progress, desc=f"{cfg.dataset} features ({cfg.backbone})")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(feats, tmp)
        tmp.replace(path)
    # Unit-norm rows (as in SimpleShot): one scale for every backbone and dataset, so inner step
    # sizes mean the same thing everywhere.
    return imgs, torch.nn.functional.normalize(feats, dim=1)


def prepare_fewshot(cfg: FewShotConfig, device: torch.device | str = "cpu") -> FewShotData:
    """Load ``cfg.dataset``, compute (or load cached) features, split classes into parts."""
    check_dataset(cfg.dataset)
    check_backbone(cfg.backbone)
    if cfg.backbone_dataset is not None:
        check_dataset(cfg.backbone_dataset)
    device = torch.device(device)
    imgs, feats = _features(cfg, device)
    n = imgs.num_classes
    cross = cfg.backbone_dataset not in (None, cfg.dataset)
    if cfg.split is not None:
        split = cfg.split.validate(n)
    elif cross:  # every class of the target dataset is new to the meta-trained learner
        split = ClassSplit(default_split(n).train, (), tuple(range(n)))
    else:
        split = default_split(n)
    parts = split_indices(imgs.labels, imgs.is_test, split, keep_image_split=cfg.keep_image_split, seed=cfg.seed)
    return FewShotData(feats, imgs.labels, parts, split, cfg.dataset, imgs.is_test)


def classic_features(*, dataset: str, data_root: Optional[str], download: bool, skip_integrity_check: bool,
                     backbone: str, seed: int, device: torch.device, progress: bool = True,
                     cache: Optional[str] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Features of torchvision's train and test splits for classic (non-few-shot) training.

    conv4 is pre-trained on the default meta-train classes' *train-split* images only
    (``keep_image_split``), so no test image ever shaped the backbone.
    """
    check_dataset(dataset)
    check_backbone(backbone)
    cfg = FewShotConfig(dataset=dataset, data_root=data_root, download=download, skip_integrity_check=skip_integrity_check,
                        backbone=backbone, keep_image_split=True, seed=seed, cache_dir=cache, progress=progress)
    imgs, feats = _features(cfg, torch.device(device))
    tr, te = ~imgs.is_test, imgs.is_test
    return feats[tr], imgs.labels[tr], feats[te], imgs.labels[te]


def synthetic_fewshot(num_classes: int = 10, per_class: int = 40, dim: int = 16, seed: int = 0,
                      noise: float = 1.0, split: Optional[ClassSplit] = None) -> FewShotData:
    """Class-separable Gaussian features in memory (for tests and quick experiments)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 2.0
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    feats = centers[labels] + noise * torch.randn(len(labels), dim, generator=g)
    split = (split or default_split(num_classes)).validate(num_classes)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    parts = split_indices(labels, is_test, split, seed=seed)
    return FewShotData(feats, labels, parts, split, "synthetic", is_test)
