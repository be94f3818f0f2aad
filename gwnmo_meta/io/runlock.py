"""One run per folder: an exclusive ``fcntl.flock`` on ``RUN_DIR/.gwnmo-meta.lock`` for the whole run.

The lock file holds the owner's pid. The kernel drops a flock when its process dies, so a lock
file left by a killed run is *stale*: the next run takes it over (``RunLock.stale_pid`` says
whose it was). The file is removed when the run ends.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from gwnmo_meta.errors import ConfigError

LOCK_NAME = ".gwnmo-meta.lock"


class RunLock:
    """Exclusive lock on ``folder`` (which must exist); a context manager.

    Raises:
        ConfigError: another live process holds the folder (``error: DIR is in use by process N``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.stale_pid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot lock {self.folder}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise ConfigError(f"cannot lock {self.folder}: {exc.strerror}") from None
                who = f"process {owner}" if owner else "another process"
                raise ConfigError(
                    f"{self.folder} is in use by {who}; wait for it to finish or choose another --out"
                ) from None
            # the previous owner may have removed the file after we opened it: lock the live file
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_pid(fd)
        self.stale_pid = previous if previous not in (None, os.getpid()) else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # still locked: no one can take over a removed file
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing (a run that failed before writing anything)."""
    try:
        folder.rmdir()  # only succeeds when empty
    except OSError:
        pass
