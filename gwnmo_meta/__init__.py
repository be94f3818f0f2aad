"""gwnmo-meta: GWNMO, a learned gradient-weighting optimizer, meta-trained on few-shot tasks.

Heavy modules (torch, learn2learn) load lazily so that ``gwnmo-meta --help`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "gwnmo_direction": "gwnmo_meta.weighting",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gwnmo_meta' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
