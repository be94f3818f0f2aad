"""Where gwnmo-meta keeps files by default: one helper for the cache and data folders.

The user cache folder is ``$XDG_CACHE_HOME/gwnmo-meta`` (XDG base directory spec), else
``~/.cache/gwnmo-meta``. Backbone weights and features go to ``$GWNMO_CACHE`` if set, else there;
datasets are looked for in ``--data-root``, else ``$GWNMO_DATA``, else its ``data/`` folder.
Light to import (no torch).
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gwnmo-meta``, else ``~/.cache/gwnmo-meta``.

    Returns:
        The folder (not created).
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gwnmo-meta"


def resolve_path(flag: str | Path | None, env_var: str, default: Path) -> Path:
    """``flag`` if given, else the environment variable ``env_var`` if set, else ``default``.

    Args:
        flag: the user's explicit choice (a CLI flag or function argument), or ``None``.
        env_var: the environment variable consulted next.
        default: the fallback.

    Returns:
        The path, with ``~`` expanded.
    """
    value = flag or os.environ.get(env_var)
    return Path(value).expanduser() if value else default


def cache_dir(override: str | Path | None = None) -> Path:
    """Backbone weights and features: ``override``, else ``$GWNMO_CACHE``, else the user cache.

    Args:
        override: an explicit folder, or ``None``.

    Returns:
        The folder holding ``backbones/`` and ``features/`` (not created).
    """
    return resolve_path(override, "GWNMO_CACHE", user_cache_dir())


def cache_source(folder: Path) -> str:
    """Where the cache folder ``folder`` came from, for messages: ``$GWNMO_CACHE``,
    ``$XDG_CACHE_HOME``, the default ``~/.cache``, or the caller's own choice."""
    env = os.environ.get("GWNMO_CACHE")
    if env and Path(env).expanduser() == folder:
        return "$GWNMO_CACHE"
    if folder == user_cache_dir():
        return "$XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "the default ~/.cache"
    return "the cache folder given"


def data_root(flag: str | Path | None = None) -> Path:
    """Datasets: ``flag`` (``--data-root``), else ``$GWNMO_DATA``, else ``<user cache>/data``.

    Args:
        flag: an explicit folder, or ``None``.

    Returns:
        The data root, in torchvision's layout.
    """
    return resolve_path(flag, "GWNMO_DATA", user_cache_dir() / "data")
