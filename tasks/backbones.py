"""Frozen feature extractors E: conv4 (pre-trained here on meta-train classes), ImageNet ResNet18, raw pixels.

All backbones take the canonical image format: float 3×32×32, scaled to [0, 1] and normalised per
channel with (0.5, 0.5); MNIST/FMNIST are padded 28→32 and replicated to 3 channels. One format
for all datasets keeps feature dimensions equal, so cross-dataset transfer works with any backbone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gwnmo_meta.errors import ConfigError, DataError

BACKBONES = ("conv4", "resnet18-imagenet", "none")
CONV4_EPOCHS = 4
CONV4_MAX_PER_CLASS = 600
DEFAULT_CACHE = Path.home() / ".cache" / "gwnmo-meta"


def cache_dir(override: str | Path | None = None) -> Path:
    """``override``, else ``$GWNMO_CACHE``, else ``~/.cache/gwnmo-meta``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("GWNMO_CACHE")
    return Path(env).expanduser() if env else DEFAULT_CACHE


def check_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return name


def canonical(images: Tensor) -> Tensor:
    """uint8 [N,C,H,W] (C in {1,3}, H,W in {28,32}) → float [N,3,32,32], normalised."""
    x = images.float().div_(255.0)
    if x.shape[-1] == 28:
        x = F.pad(x, (2, 2, 2, 2))
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x - 0.5) / 0.5


class Conv4(nn.Sequential):
    """Four conv3×3(64)-BN-ReLU-maxpool blocks on 32×32 inputs → 64×2×2 = 256 features."""

    feature_dim = 256

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        for c_in in (3, 64, 64, 64):
            layers += [nn.Conv2d(c_in, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)]
        super().__init__(*layers, nn.Flatten())


def pretrain_conv4(images: Tensor, labels: Tensor, classes: Sequence[int], *, seed: int, progress: bool = True,
                   epochs: int = CONV4_EPOCHS, max_per_class: int = CONV4_MAX_PER_CLASS) -> Conv4:
    """Supervised pre-training of conv4 on ``classes`` only (at most ``max_per_class`` images each)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:max_per_class]])
    idx = torch.cat(picked)
    x, y = canonical(images[idx]), labels[idx]
    remap = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([remap[int(v)] for v in y])
    net = Conv4()
    head = nn.Linear(Conv4.feature_dim, len(classes))
    opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=2e-3)
    net.train()
    batches = [(e, i) for e in range(epochs) for i in range(0, len(x), 64)]
    order = None
    for e, i in tqdm(batches, desc="pre-train conv4", disable=not progress, leave=False, dynamic_ncols=True):
        if i == 0:
            order = torch.randperm(len(x), generator=g)
        b = order[i : i + 64]
        loss = F.cross_entropy(head(net(x[b])), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def resnet18_imagenet() -> nn.Module:
    """torchvision's ImageNet ResNet18 without its classifier (512 features); DataError if weights are unavailable."""
    from torchvision.models import ResNet18_Weights, resnet18

    try:
        net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    except Exception as exc:  # noqa: BLE001 - any download/IO failure means the same to the user
        raise DataError(
            f"ImageNet ResNet18 weights could not be loaded ({type(exc).__name__}); they need a network the first "
            "time (torch hub cache); use --backbone conv4 offline"
        ) from None
    net.fc = nn.Identity()
    return net.eval()


def resnet_input(x: Tensor) -> Tensor:
    """Canonical 32×32 images → 112×112 with ImageNet statistics (a CPU-friendly compromise on 224)."""
    x = x * 0.5 + 0.5
    x = F.interpolate(x, size=112, mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def extract(fn: Callable[[Tensor], Tensor], images: Tensor, device: torch.device, *, batch: int = 512,
            progress: bool = True, desc: str = "features") -> Tensor:
    """Apply ``fn`` to canonical images in batches on ``device``; float32 features on the CPU."""
    out = []
    for i in tqdm(range(0, len(images), batch), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        x = canonical(images[i : i + batch]).to(device)
        out.append(fn(x).float().flatten(1).cpu())
    return torch.cat(out)
