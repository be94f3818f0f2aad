"""Frozen feature extractors E: conv4 (pre-trained here on meta-train classes), ImageNet ResNet18, raw pixels.

All backbones take the canonical image format: float 3×32×32, scaled to [0, 1] and normalised per
channel with mean 0.5 / std 0.5 (values in [-1, 1]); MNIST/FMNIST are zero-padded 28→32 and
replicated to 3 channels. One format for all datasets keeps feature dimensions equal, so
cross-dataset transfer works with any backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gwnmo_meta.errors import DataError
from gwnmo_meta.registry import BACKBONES

CONV4_EPOCHS = 4
CONV4_MAX_PER_CLASS = 600
CONV4_BATCH = 64
CONV4_LR = 2e-3
RESNET_SIZE = 112


def check_backbone(name: str) -> str:
    """``name`` if it is a registered backbone, else a one-line ConfigError."""
    return BACKBONES.check(name).name


T = TypeVar("T")


def _tqdm(
    iterable: Iterable[T], *, progress: bool, desc: str, total: int | None = None
) -> Iterable[T]:
    from tqdm.auto import tqdm

    # disable=None: tqdm hides itself when stderr is not a terminal
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=None if progress else True,
        leave=False,
        dynamic_ncols=True,
    )


def canonical(images: Tensor) -> Tensor:
    """uint8 [N,C,H,W] (C in {1,3}, H,W in {28,32}) → float [N,3,32,32] in [-1, 1]."""
    if (
        images.dim() != 4
        or images.shape[1] not in (1, 3)
        or tuple(images.shape[-2:]) not in ((28, 28), (32, 32))
    ):
        raise DataError(
            f"unexpected image shape {tuple(images.shape)}; expected N×1×28×28 or N×3×32×32"
        )
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
            layers += [
                nn.Conv2d(c_in, 64, 3, padding=1),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        super().__init__(*layers, nn.Flatten())


def pretrain_conv4(
    images: Tensor,
    labels: Tensor,
    classes: Sequence[int],
    *,
    seed: int,
    progress: bool = True,
    epochs: int = CONV4_EPOCHS,
    max_per_class: int = CONV4_MAX_PER_CLASS,
    device: torch.device | str = "cpu",
) -> Conv4:
    """Supervised pre-training of conv4 (+ a linear head, then dropped) on ``classes`` only.

    At most ``max_per_class`` images per class (seeded choice), ``epochs`` epochs of Adam with
    batch 64. Seeded; the global torch RNG is left untouched. Returns the net in eval mode on CPU.
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:max_per_class]])
    idx = torch.cat(picked)
    if len(idx) == 0:
        raise DataError(
            f"no images of the meta-train classes {list(classes)} to pre-train conv4 on"
        )
    x = canonical(images[idx]).contiguous()
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.int64)
    remap[torch.tensor(list(classes))] = torch.arange(len(classes))
    y = remap[labels[idx]]
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        net = Conv4().to(device)
        head = nn.Linear(Conv4.feature_dim, len(classes)).to(device)
        opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=CONV4_LR)
        net.train()
        steps = [(e, i) for e in range(epochs) for i in range(0, len(x), CONV4_BATCH)]
        order = torch.arange(len(x))
        for _e, i in _tqdm(steps, progress=progress, desc="pre-train conv4"):
            if i == 0:
                order = torch.randperm(len(x), generator=g)
            b = order[i : i + CONV4_BATCH]
            if len(b) < 2:  # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(head(net(x[b].to(device))), y[b].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval().cpu()


def resnet18_imagenet() -> nn.Module:
    """torchvision's ImageNet ResNet18 without its classifier (512 features); DataError if weights are unavailable."""
    from torchvision.models import ResNet18_Weights, resnet18

    try:
        net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    except Exception as exc:  # noqa: BLE001 - any download/IO failure means the same to the user
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise DataError(
            f"ImageNet ResNet18 weights could not be loaded ({type(exc).__name__}); they are downloaded once into "
            f"{hub} (needs network): copy resnet18-f37072fd.pth there, or use --backbone conv4 offline"
        ) from None
    net.fc = nn.Identity()
    return net.eval()


def resnet_input(x: Tensor) -> Tensor:
    """Canonical 32×32 images → 112×112 with ImageNet statistics (a CPU-friendly compromise on 224)."""
    x = x * 0.5 + 0.5
    x = F.interpolate(x, size=RESNET_SIZE, mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def extract(
    fn: Callable[[Tensor], Tensor],
    images: Tensor,
    device: torch.device | str,
    *,
    batch: int = 512,
    progress: bool = True,
    desc: str = "features",
) -> Tensor:
    """Apply ``fn`` to canonical images in batches on ``device``; float32 features [N, D] on the CPU."""
    device = torch.device(device)
    out = []
    starts = range(0, len(images), batch)
    for i in _tqdm(starts, progress=progress, desc=desc, total=len(starts)):
        x = canonical(images[i : i + batch]).to(device)
        out.append(fn(x).float().flatten(1).cpu())
    return torch.cat(out)
