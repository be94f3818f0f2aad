"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every write goes to a hidden temp file in the target's folder (``.NAME.PID.XXXX.tmp``), is
fsync'ed, then renamed over the target (``os.replace``, atomic on POSIX), and the folder is
fsync'ed so the rename survives a power cut. A process killed mid-write (SIGKILL) leaves only a
temp file; :func:`remove_stale_temps` deletes those whose writer is no longer alive, and nothing
reads them meanwhile (their names never match a result file).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from gwnmo_meta.errors import ConfigError

TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory fds: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path`` atomically.

    Args:
        path: the file to (re)write.
        mode: ``"w"`` (text; ``kwargs`` go to ``open``, e.g. ``newline=""``) or ``"wb"``.

    Raises:
        ConfigError: the folder cannot be created or written, or ``path`` is read-only.
    """
    path = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only, mode 'w' or 'wb', not {mode!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):
            raise PermissionError(13, "Permission denied (the file is read-only)")
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent
        )
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        encoding = None if "b" in mode else kwargs.pop("encoding", "utf-8")
        with os.fdopen(fd, mode, encoding=encoding, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_dir(path.parent)


def check_writable_file(path: str | Path, flag: str | None = None) -> None:
    """Check up front that :func:`atomic_open` could write ``path`` (creating its folder).

    Raises:
        ConfigError: naming ``flag`` (or the path) if the folder cannot be created or written,
            ``path`` is a folder, or ``path`` is read-only.
    """
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):
            raise PermissionError(13, "Permission denied (the file is read-only)")
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent
        )
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"cannot write {what}: {exc.strerror or exc}") from None
    except UnicodeEncodeError:
        raise ConfigError(f"cannot write {what!r}: the path is not valid text") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN/±Inf float replaced by ``None``, so the JSON is strict (no ``NaN``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON (non-finite floats become ``null``) atomically."""
    text = json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files in ``folder`` left by writers that are no longer running (e.g. SIGKILL).

    Returns:
        The paths removed (a temp file of a live process is kept).
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        parts = tmp.name.split(".")  # "", NAME..., PID, RANDOM, "tmp"
        pid = parts[-3] if len(parts) >= 4 else ""
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
