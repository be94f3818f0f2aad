"""Reading a small file a user hands over (``--config``): a regular file of bounded size only.

``/dev/zero``, a FIFO or a multi-gigabyte file would otherwise be read without end or block; they
are refused with a ``ConfigError`` before anything is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gwnmo_meta.errors import ConfigError

MAX_CONFIG_BYTES = 1024**2  # a config.json is about 1 KiB; anything past 1 MiB is not one


def read_small_text(path: str | Path, what: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of ``path``, which must be a regular file of at most ``limit`` bytes.

    Args:
        path: the file.
        what: how to name it in messages (e.g. ``"config"``).
        limit: the largest size accepted, in bytes.

    Raises:
        ConfigError: missing or unreadable, not a regular file, larger than ``limit``, or not
            UTF-8 text.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit // 1024} KiB; it is not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
