"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every write goes to a hidden temp file in the target's folder (``.NAME.PID.XXXX.tmp``), is
fsync'ed, then renamed over the target (``os.replace``, atomic on POSIX), and the folder is
fsync'ed so the rename survives a power cut. A process killed mid-write (SIGKILL) leaves only a
temp file; :func:`remove_stale_temps` deletes those whose writer is no longer alive, and nothing
reads them meanwhile (their names never match a result file).

Only a regular file is ever replaced: a target that is a symbolic link, a device, a FIFO, a socket
or a folder is refused (:func:`check_replaceable`), so no write lands on a planted path.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
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


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def check_replaceable(path: str | Path, what: str | None = None) -> None:
    """``ConfigError`` unless ``path`` is absent or a regular file (judged without following links).

    Args:
        path: the file about to be (re)written.
        what: how to name it in the message (default: the path).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot write {what or path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise ConfigError(f"refusing to write {what or path}: it is {kind}, not a regular file")


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", *, create_parent: bool = True, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path`` atomically.

    Args:
        path: the file to (re)write; if it exists it must be a regular file (not a link).
        mode: ``"w"`` (text; ``kwargs`` go to ``open``, e.g. ``newline=""``) or ``"wb"``.
        create_parent: create ``path``'s folder if missing (``False``: a missing folder is an
            error, e.g. a run folder deleted under a live run is never re-created).

    Raises:
        ConfigError: the folder cannot be created or written, ``path`` is read-only, or it is not
            a regular file (symbolic link, device, FIFO, socket, folder).
    """
    path = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only, mode 'w' or 'wb', not {mode!r}")
    check_replaceable(path)
    try:
        if create_parent:
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
        check_replaceable(path)  # again: something may have been planted meanwhile
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
            ``path`` is a folder, read-only, or not a regular file.
    """
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        check_replaceable(path, what)
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


def atomic_write_bytes(path: str | Path, data: bytes, *, create_parent: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring and :func:`atomic_open`)."""
    with atomic_open(path, "wb", create_parent=create_parent) as fh:
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
    removed: list[Path] = []
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
