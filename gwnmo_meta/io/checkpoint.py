"""Checkpoints: weights-only loading, a content digest, atomic writes, clear errors on bad files.

Security model: a checkpoint is *untrusted* input. It holds only tensors and plain data (dicts,
lists, tuples, strings, numbers, booleans, ``None``) and is read with
``torch.load(weights_only=True)``, whose unpickler refuses every other object, so a hostile file
cannot run code; it is refused with a :class:`CheckpointError`. The RNG states are stored in that
vocabulary (NumPy's state as a tensor, not an ``ndarray``). ``sha256`` holds a digest of the rest
of the content (every tensor's bytes, dtype and shape, every key and value), checked on load, so
flipped bytes anywhere in the file are refused too. The structure (keys and types) of each kind
of checkpoint is checked before anything uses it.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gwnmo_meta.errors import CheckpointError
from gwnmo_meta.io.atomic import atomic_write_bytes

FORMAT_VERSION = 2  # 2: weights-only content with a sha256 digest (1: pickled NumPy RNG state)
KIND_META = "gwnmo-meta/meta-train"
KIND_CLASSIC = "gwnmo-meta/classic"  # M of a classic run (weighting.pt)
KIND_CLASSIC_RUN = "gwnmo-meta/classic-run"  # a classic run's state (last.pt), for --resume
DIGEST_KEY = "sha256"


class NonFiniteCheckpoint(ValueError):
    """A checkpoint would hold NaN/Inf tensors; it is never written."""


def _feed(h: hashlib._Hash, obj: Any, where: str) -> None:
    """Hash ``obj`` canonically (type-tagged, dict keys sorted) into ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key, where)
            _feed(h, obj[key], f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}|".encode())
        for i, item in enumerate(obj):
            _feed(h, item, f"{where}[{i}]")
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())
    else:
        raise TypeError(f"checkpoint field {where} holds a {type(obj).__name__}, not plain data")


def content_digest(body: dict[str, Any]) -> str:
    """sha256 (hex) of ``body`` without its ``sha256`` entry; raises ``TypeError`` on non-plain data."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in body.items() if k != DIGEST_KEY}, "checkpoint")
    return h.hexdigest()


def non_finite_tensors(obj: Any, where: str = "") -> list[str]:
    """Names of the floating-point tensors in ``obj`` (nested dicts/lists) holding NaN or Inf."""
    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() or obj.is_complex()
        return [where or "tensor"] if bad and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, dict):
        return [
            n for k, v in obj.items() for n in non_finite_tensors(v, f"{where}.{k}".lstrip("."))
        ]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in non_finite_tensors(v, f"{where}[{i}]")]
    return []


def save_checkpoint(
    path: str | Path, payload: dict[str, Any], *, create_parent: bool = True
) -> None:
    """Write ``payload`` (tensors and plain data only) to ``path`` atomically, with its digest.

    ``create_parent=False``: a missing folder is an error (a run's folder is never re-created).

    Raises:
        NonFiniteCheckpoint: a floating-point tensor holds NaN/Inf (nothing is written).
        TypeError: the payload holds an object a weights-only load would refuse.
    """
    body = {"format_version": FORMAT_VERSION, **payload}
    bad = non_finite_tensors(body)
    if bad:
        raise NonFiniteCheckpoint(
            f"refusing to write {path}: non-finite values in {', '.join(bad[:3])}"
        )
    body[DIGEST_KEY] = content_digest(body)
    buf = io.BytesIO()
    torch.save(body, buf)
    atomic_write_bytes(path, buf.getvalue(), create_parent=create_parent)


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, weights-only, digest- and structure-checked.

    Args:
        path: the checkpoint file.
        kind: the expected ``kind`` (``KIND_META``, ``KIND_CLASSIC``, ``KIND_CLASSIC_RUN``);
            ``None`` accepts any.

    Returns:
        The checkpoint's content (without its digest).

    Raises:
        CheckpointError: missing, unreadable, unsafe (objects other than tensors and plain data),
            damaged (digest mismatch), of another version or kind, or with missing/mistyped keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        body = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read untrusted bytes is a bad file
        text = str(exc)
        if "global" in text.lower():  # the unpickler refused a class or function
            raise CheckpointError(
                f"refusing checkpoint {path}: it holds objects other than tensors and plain data "
                "(a hostile file, or the unsafe format 1 of older gwnmo-meta); nothing in it was run"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a gwnmo-meta checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(body, dict) or "format_version" not in body:
        raise CheckpointError(f"{path} is not a gwnmo-meta checkpoint")
    if body["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {body['format_version']!r}, "
            f"this gwnmo-meta reads {FORMAT_VERSION}"
        )
    stored = body.pop(DIGEST_KEY, None)
    if not isinstance(stored, str):
        raise CheckpointError(f"checkpoint {path} has no content digest; not written by gwnmo-meta")
    try:
        actual = content_digest(body)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {path} is malformed: {exc}") from None
    if stored != actual:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its content does not match its sha256 digest"
        )
    found = body.get("kind")
    if kind is not None and found != kind:
        raise CheckpointError(f"checkpoint {path} is a {found!r} checkpoint, expected {kind!r}")
    check = SCHEMAS.get(found) if isinstance(found, str) else None
    if check is None:
        raise CheckpointError(f"checkpoint {path} has unknown kind {found!r}")
    check(body, path)
    return body


# ---- structure ------------------------------------------------------------------------------


def _require(
    body: dict[str, Any], path: Path, key: str, ok: Callable[[Any], bool], what: str
) -> None:
    if key not in body:
        raise CheckpointError(f"checkpoint {path} is missing {key!r}")
    if not ok(body[key]):
        raise CheckpointError(
            f"checkpoint {path}: {key!r} should be {what}, got {type(body[key]).__name__}"
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_state(v: Any) -> bool:
    """A module state dict: names → tensors."""
    return isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items()
    )


def _is_py_random_state(v: Any) -> bool:
    """A state ``random.setstate`` accepts (tuple, or list after a JSON round trip)."""
    try:
        random.Random().setstate((v[0], tuple(v[1]), v[2]))
    except Exception:  # noqa: BLE001 - any malformed value is just "not a state"
        return False
    return len(v) == 3


def _is_rng(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and {"python", "numpy", "torch"} <= set(v)
        and _is_py_random_state(v["python"])
        and isinstance(v["numpy"], dict)
        and isinstance(v["numpy"].get("keys"), torch.Tensor)
        and isinstance(v["torch"], torch.Tensor)
    )


def _check_meta(body: dict[str, Any], path: Path) -> None:
    _require(body, path, "config", lambda v: isinstance(v, dict), "a dict")
    _require(body, path, "feature_dim", lambda v: _is_int(v) and v > 0, "a positive int")
    _require(body, path, "method", _is_state, "a dict of tensors")
    _require(
        body, path, "meta_optimizer", lambda v: v is None or isinstance(v, dict), "a dict or None"
    )
    _require(
        body,
        path,
        "sampler",
        lambda v: isinstance(v, dict) and _is_py_random_state(v.get("rng")),
        "a sampler state",
    )
    _require(body, path, "rng", _is_rng, "RNG states")
    _require(body, path, "step", lambda v: _is_int(v) and v >= 0, "a non-negative int")
    _require(
        body,
        path,
        "best_val_accuracy",
        lambda v: v is None or isinstance(v, (int, float)),
        "a number or None",
    )
    _require(
        body,
        path,
        "history",
        lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
        "a list of dicts",
    )
    if not isinstance(body.get("pending_validation"), (dict, type(None))):
        raise CheckpointError(f"checkpoint {path}: 'pending_validation' should be a dict or None")
    if not isinstance(body.get("data_fingerprint"), (str, type(None))):
        raise CheckpointError(f"checkpoint {path}: 'data_fingerprint' should be a string or None")


def _check_classic(body: dict[str, Any], path: Path) -> None:
    _require(body, path, "config", lambda v: isinstance(v, dict), "a dict")
    _require(body, path, "weighting", _is_state, "a dict of tensors")


def _check_classic_run(body: dict[str, Any], path: Path) -> None:
    _require(body, path, "config", lambda v: isinstance(v, dict), "a dict")
    for key in ("rep", "epoch"):
        _require(body, path, key, lambda v: _is_int(v) and v >= 0, "a non-negative int")
    _require(
        body,
        path,
        "reps",
        lambda v: (
            isinstance(v, list)
            and all(
                isinstance(r, dict)
                and _is_int(r.get("rep"))
                and isinstance(r.get("epochs"), list)
                and all(isinstance(e, dict) for e in r["epochs"])
                for r in v
            )
        ),
        "a list of reps",
    )
    _require(body, path, "weighting", lambda v: v is None or _is_state(v), "a state dict or None")
    for key in ("meta_optimizer", "learner"):
        _require(body, path, key, lambda v: v is None or isinstance(v, dict), "a dict or None")
    _require(body, path, "generator", lambda v: isinstance(v, torch.Tensor), "a tensor")
    _require(body, path, "rng", _is_rng, "RNG states")
    if not isinstance(body.get("data_fingerprint"), (str, type(None))):
        raise CheckpointError(f"checkpoint {path}: 'data_fingerprint' should be a string or None")


SCHEMAS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    KIND_META: _check_meta,
    KIND_CLASSIC: _check_classic,
    KIND_CLASSIC_RUN: _check_classic_run,
}


# ---- RNG states -----------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """Capture the global RNG states (Python, NumPy, torch CPU and CUDA) as tensors and plain data."""
    key, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": str(key),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured; ``CheckpointError`` if the states are malformed."""
    try:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        n = states["numpy"]
        np.random.set_state(
            (
                n["key"],
                n["keys"].numpy().astype(np.uint32),
                n["pos"],
                n["has_gauss"],
                n["cached_gaussian"],
            )
        )
        torch.set_rng_state(states["torch"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"malformed RNG state in checkpoint ({type(exc).__name__})") from None
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
