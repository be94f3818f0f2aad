"""One place that imports learn2learn (lazily: it is a heavy import)."""

from __future__ import annotations

import contextlib
import io
import sys
from types import ModuleType


def learn2learn() -> ModuleType:
    """The ``learn2learn`` module.

    learn2learn imports gym, whose ``gym_notices`` prints a multi-line deprecation notice on
    stderr at import; gwnmo-meta never uses gym, so that notice is swallowed. Import errors
    still propagate.
    """
    if "gym" not in sys.modules:
        with contextlib.redirect_stderr(io.StringIO()):
            import gym  # noqa: F401
    import learn2learn as l2l

    return l2l
