"""Device selection for ``--device auto|cpu|cuda|cuda:N|mps``."""

from __future__ import annotations

import torch

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import check_device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(name: str) -> torch.device:
    """The torch device for a ``--device`` value.

    Args:
        name: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        The device.

    Raises:
        ConfigError: an unknown name, or a device this machine does not have (one line that says
            what is available).
    """
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name} was requested but no CUDA device is available; "
                "use --device cpu or auto"
            )
        device = torch.device(name)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
        return device
    if name == "mps" and not _mps_available():
        raise ConfigError(
            "--device mps was requested but this torch build has no usable MPS backend; "
            "use --device cpu or auto"
        )
    return torch.device(name)
