"""Memory checked before work: a rough estimate of what a configuration allocates, against what is free.

A size flag (``--meta-batch``, ``--head-hidden``, ``--weighting-hidden``, ``--inner-steps`` ...)
can ask for more memory than the machine has; the run would then grow until the kernel kills
it, or fail with a traceback. :func:`check_meta_train` and :func:`check_classic` refuse such a
configuration up front with a ``ConfigError`` naming the size.

The estimate (float32, 4 bytes a number) is deliberately simple:

* **parameters**: the target (the head; conv4 and its head with ``--adapt all``) and M, each
  counted four times (values, gradients and Adam's two moments). Their sizes come from building
  the modules on PyTorch's ``meta`` device, which allocates nothing.
* **episodes**: one meta-batch, ``meta_batch × ways × (shots + query)`` inputs of the head's
  input width (features, or flat images with ``--adapt all``).
* **activations**, per task and inner step kept for the meta-gradient: the fast weights and their
  gradient (2 numbers per target parameter), M's work (the per-coordinate M: its 15 inputs and two
  hidden layers per coordinate; the factored M: a few numbers per coordinate and its MLP per row;
  the thesis MLP: its input 2P + D and layers), and the target's forward pass on the task's
  examples (for conv4: three maps per block). Tasks held at once: the meta-batch when it is
  task-batched, else one; steps held: every inner step (each schedule back-propagates its
  meta-loss once, after the inner loop), plus one.

Free memory: on the CPU ``MemAvailable`` of ``/proc/meminfo`` (else ``os.sysconf``), lowered to
the cgroup's ``memory.max`` headroom when one is set; on CUDA ``torch.cuda.mem_get_info``'s free
bytes. Other devices are not checked. The estimate leaves out what does not depend on these flags
(the dataset, the feature cache, PyTorch itself).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gwnmo_meta.errors import ConfigError

if TYPE_CHECKING:
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.training.classic import ClassicConfig

FLOAT = 4  # bytes per float32
CONV4_MAPS = 64 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4)  # conv4's feature-map sizes on 32×32 images
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a configuration needs: parameters (with gradients and Adam state), one meta-batch of
    episodes, and the activations kept for the meta-gradient."""

    parameters: int
    episodes: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.episodes + self.activations

    def describe(self) -> str:
        parts = (
            ("parameters", self.parameters),
            ("episodes", self.episodes),
            ("activations", self.activations),
        )
        return ", ".join(f"{name} {human(n)}" for name, n in parts)


def human(n: float) -> str:
    """``n`` bytes as B, KiB, MiB, GiB, TiB, PiB or EiB (3 significant digits)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def input_width(backbone: str, adapt: str = "head") -> int:
    """Width of what the target reads: the backbone's features, or flat images (``adapt="all"``)."""
    from gwnmo_meta.tasks.backbones import Conv4
    from gwnmo_meta.training.targets import IMAGE_DIM

    if adapt == "all" or backbone == "none":
        return IMAGE_DIM
    return Conv4.feature_dim if backbone == "conv4" else 512  # resnet18's pooled features


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _weighting_work(kind: str, shapes: list[tuple[int, ...]], feature_dim: int, hidden: int) -> int:
    """Numbers M's forward keeps per task and step (see the module docstring)."""
    from gwnmo_meta.optim.factored import ROW_INPUTS
    from gwnmo_meta.optim.nets import CoordinateWeighting

    coords = sum(math.prod(s) for s in shapes)
    if kind == "coordinate":
        return coords * (CoordinateWeighting.coord_inputs + 8 + 2 * hidden)
    if kind == "factored":
        rows = sum(s[0] if s else 1 for s in shapes)
        return 4 * coords + rows * (ROW_INPUTS + 2 * hidden)
    return 3 * coords + feature_dim + 2 * hidden  # the thesis MLP: input 2P + D, output P


def estimate_meta_train(
    cfg: RunConfig, feature_dim: int | None = None, train: bool = True
) -> MemoryEstimate:
    """The memory one meta-training run of ``cfg`` needs, roughly.

    Args:
        cfg: the run (validated).
        feature_dim: the head's input width (default: from ``cfg.backbone`` and ``cfg.adapt``).
        train: ``False``: evaluation only (no meta-gradient: one inner step held at a time).
    """
    from gwnmo_meta.optim.nets import build_weighting, make_head
    from gwnmo_meta.registry import METHODS
    from gwnmo_meta.training.targets import Conv4Target

    info = METHODS[cfg.method]
    width = feature_dim or input_width(cfg.backbone, cfg.adapt)
    examples = cfg.ways * (cfg.shots + cfg.query)
    with torch.device("meta"):  # shapes only: nothing is allocated
        head = (
            Conv4Target(cfg.ways, bias=cfg.conv_bias)
            if cfg.adapt == "all"
            else make_head(width, cfg.ways, cfg.head_hidden)
        )
        shapes = [tuple(p.shape) for p in head.parameters()]
        target = _count(head)
        m_params, m_work = 0, 0
        if info.learned_optimizer:
            m = build_weighting(
                cfg.weighting, width, shapes, hidden=cfg.weighting_hidden, prime=info.prime
            )
            m_params = _count(m)
            m_work = _weighting_work(cfg.weighting, shapes, width, cfg.weighting_hidden)
    if cfg.adapt == "all":
        forward = examples * 3 * CONV4_MAPS
    else:
        forward = examples * ((cfg.head_hidden or 0) + cfg.ways)
    per_step = 2 * target + m_work + forward
    # the meta-loss of every schedule is back-propagated once, after the whole inner loop
    steps = cfg.inner_steps if train and info.engine != "reference" else 1
    tasks = cfg.meta_batch if cfg.task_batch else 1
    return MemoryEstimate(
        parameters=4 * (target + m_params) * FLOAT,
        episodes=cfg.meta_batch * examples * width * FLOAT,
        activations=tasks * (steps + 1) * per_step * FLOAT,
    )


def estimate_classic(cfg: ClassicConfig, classes: int = 10) -> MemoryEstimate:
    """The memory classic training of ``cfg`` needs beyond its data, roughly (target, M, one step)."""
    from gwnmo_meta.optim.nets import build_weighting
    from gwnmo_meta.training.classic_learners import make_target

    width = input_width(cfg.backbone)
    with torch.device("meta"):
        target = make_target(width, cfg.hidden, classes)
        shapes = [tuple(p.shape) for p in target.parameters()]
        m_params, m_work = 0, 0
        if cfg.info.learned_optimizer:
            m_params = _count(build_weighting(cfg.weighting, width, shapes, prime=cfg.info.prime))
            m_work = _weighting_work(cfg.weighting, shapes, width, 32)
    n = _count(target)
    return MemoryEstimate(
        parameters=4 * (n + m_params) * FLOAT,
        episodes=0,  # the mini-batches are views of the data set, already in memory
        activations=2 * (2 * n + m_work) * FLOAT,
    )


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _cgroup_headroom() -> int | None:
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((CGROUP / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a run on ``device`` (``None``: not known, e.g. MPS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    known = [n for n in (_meminfo_available(), _cgroup_headroom()) if n is not None]
    return min(known) if known else None


def check_fits(need: MemoryEstimate, device: torch.device, hint: str) -> None:
    """``ConfigError`` naming the size when ``need`` exceeds the memory free on ``device``."""
    free = available_bytes(device)
    if free is None or need.total <= free:
        return
    raise ConfigError(
        f"this configuration needs about {human(need.total)} of memory ({need.describe()}), "
        f"more than the {human(free)} available on {device}; {hint}"
    )


def _built(estimate: Callable[..., MemoryEstimate], *args: Any) -> MemoryEstimate:
    try:
        return estimate(*args)
    except (RuntimeError, OverflowError, ValueError) as exc:  # more elements than an int64 holds
        raise ConfigError(
            f"this configuration's sizes are too large to build any tensor ({exc})"
        ) from None


def check_meta_train(
    cfg: RunConfig, device: torch.device, feature_dim: int | None = None, train: bool = True
) -> None:
    """Refuse ``cfg`` before any work if it cannot fit in ``device``'s free memory (``train``:
    meta-training, else evaluation only; see :func:`estimate_meta_train`)."""
    need = _built(estimate_meta_train, cfg, feature_dim, train)
    check_fits(
        need, device, "use smaller sizes (--meta-batch, --head-hidden, --weighting-hidden ...)"
    )


def check_classic(cfg: ClassicConfig, device: torch.device) -> None:
    """Refuse classic training of ``cfg`` before any work if it cannot fit in free memory."""
    need = _built(estimate_classic, cfg)
    check_fits(need, device, "use a smaller --hidden")
