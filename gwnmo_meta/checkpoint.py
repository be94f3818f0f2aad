"""Checkpoints: atomic writes, a format version, clear errors on bad files."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gwnmo_meta.errors import CheckpointError

FORMAT_VERSION = 1
KIND_META = "gwnmo-meta/meta-train"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format_version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise ``CheckpointError`` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        body = torch.load(path, map_location="cpu", weights_only=False)
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        RuntimeError,
        OSError,
        ValueError,
    ) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a gwnmo-meta checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(body, dict) or "format_version" not in body:
        raise CheckpointError(f"{path} is not a gwnmo-meta checkpoint")
    if body["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {body['format_version']}, this gwnmo-meta reads {FORMAT_VERSION}"
        )
    if kind is not None and body.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint {path} is a {body.get('kind')!r} checkpoint, expected {kind!r}"
        )
    return body


def rng_states() -> dict[str, Any]:
    """Capture the global RNG states (Python, NumPy, torch CPU and CUDA)."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
