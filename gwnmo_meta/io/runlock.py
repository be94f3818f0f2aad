"""One run per folder: an exclusive ``fcntl.flock`` on ``RUN_DIR/.gwnmo-meta.lock`` for the whole run.

The lock file holds the owner's pid. The kernel drops a flock when its process dies, so a lock
file left by a killed run is *stale*: the next run takes it over (``RunLock.stale_pid`` says
whose it was). The file is removed when the run ends.

The lock file is opened without following links (``O_NOFOLLOW``) and must be a regular file with
one link: a planted symbolic or hard link is refused, never truncated. A run calls
:meth:`RunLock.verify` before each checkpoint: if its folder or lock file was deleted or replaced,
it stops (:class:`RunFolderLost`) instead of writing into a folder it no longer owns.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from gwnmo_meta.errors import ConfigError, GwnmoError

LOCK_NAME = ".gwnmo-meta.lock"


class RunFolderLost(GwnmoError):
    """The run's folder or lock file was deleted or replaced while it ran (exit code 1)."""

    exit_code = 1


class RunLock:
    """Exclusive lock on ``folder`` (which must exist); a context manager.

    Raises:
        ConfigError: another live process holds the folder (``error: DIR is in use by process N``),
            or the lock file is a symbolic link, a hard link or not a regular file.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.stale_pid: int | None = None
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None  # (st_dev, st_ino) of the lock file
        self._folder_id: tuple[int, int] | None = None  # and of the folder

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    f"refusing to lock {self.folder}: {self.path} is a symbolic link"
                ) from None
            raise ConfigError(f"cannot lock {self.folder}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a file"
            raise ConfigError(f"refusing to lock {self.folder}: {self.path} is {what}")
        return fd

    def acquire(self) -> RunLock:
        while True:
            fd = self._open()
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
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
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
        st, folder = os.fstat(fd), os.stat(self.folder)
        self._id, self._folder_id = (st.st_dev, st.st_ino), (folder.st_dev, folder.st_ino)
        return self

    def held(self) -> bool:
        """Whether the folder and the lock file are still the ones this lock was taken on."""
        if self._fd is None:
            return False
        try:
            st, folder = os.lstat(self.path), os.stat(self.folder)
        except OSError:
            return False
        same_folder = (folder.st_dev, folder.st_ino) == self._folder_id
        return same_folder and (st.st_dev, st.st_ino) == self._id

    def verify(self) -> None:
        """Raise :class:`RunFolderLost` if the folder or its lock file was deleted or replaced."""
        if self._fd is not None and not self.held():
            raise RunFolderLost(
                f"the run folder {self.folder} or its lock file was deleted or replaced while "
                "this run was writing it; stopped without writing there"
            )

    def release(self) -> None:
        if self._fd is None:
            return
        if self.held():  # still locked: no one can take over a removed file
            self.path.unlink(missing_ok=True)
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
