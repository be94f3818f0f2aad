"""gwnmo-meta: GWNMO, a learned gradient-weighting optimizer, meta-trained on few-shot tasks.

The Python API, importable from the package root::

    from gwnmo_meta import GWNMO, CoordinateWeighting, RunConfig, meta_train, evaluate_checkpoint

* optimizers: :class:`GWNMO` (a ``torch.optim.Optimizer``; higher turns it into
  :class:`DifferentiableGWNMO` inside ``higher.innerloop_ctx``), :class:`HG`, and the update
  direction :func:`gwnmo_direction`;
* the GWNMO step as pure functions for ``torch.func`` loops (no higher): :func:`gwnmo_step`,
  :func:`gwnmo_delta` (:mod:`gwnmo_meta.functional`);
* weighting networks M: :class:`CoordinateWeighting`, :class:`ThesisMLPWeighting`,
  :class:`FactoredWeighting`, :func:`build_weighting`, and :func:`load_weighting` (a meta-trained M from a checkpoint);
* runs: :class:`RunConfig`, :func:`meta_train`, :func:`evaluate_checkpoint`;
* few-shot data: :class:`FewShotConfig`, :func:`prepare_fewshot`, :class:`TaskSpec`,
  :class:`Episode`;
* methods: :class:`MethodConfig`, :func:`build_method`; every choice: :mod:`gwnmo_meta.registry`.

Names load lazily on first use, so ``import gwnmo_meta`` (and ``gwnmo-meta --help``) imports
neither torch nor learn2learn. See examples/ for runnable scripts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "GWNMO": "gwnmo_meta.optim.gwnmo",
    "DifferentiableGWNMO": "gwnmo_meta.optim.gwnmo",
    "HG": "gwnmo_meta.optim.gwnmo",
    "gwnmo_direction": "gwnmo_meta.optim.direction",
    "gwnmo_step": "gwnmo_meta.functional",
    "gwnmo_delta": "gwnmo_meta.functional",
    "CoordinateWeighting": "gwnmo_meta.optim.nets",
    "ThesisMLPWeighting": "gwnmo_meta.optim.nets",
    "FactoredWeighting": "gwnmo_meta.optim.factored",
    "build_weighting": "gwnmo_meta.optim.nets",
    "load_weighting": "gwnmo_meta.optim.pretrained",
    "weighting_is_prime": "gwnmo_meta.optim.pretrained",
    "RunConfig": "gwnmo_meta.config",
    "meta_train": "gwnmo_meta.training.trainer",
    "TrainResult": "gwnmo_meta.training.trainer",
    "evaluate_checkpoint": "gwnmo_meta.evaluation.evaluate",
    "FewShotConfig": "gwnmo_meta.tasks.fewshot",
    "FewShotData": "gwnmo_meta.tasks.fewshot",
    "prepare_fewshot": "gwnmo_meta.tasks.fewshot",
    "TaskSpec": "gwnmo_meta.tasks.episodes",
    "Episode": "gwnmo_meta.tasks.episodes",
    "MethodConfig": "gwnmo_meta.training.methods",
    "MetaMethod": "gwnmo_meta.training.methods",
    "build_method": "gwnmo_meta.training.methods",
    "GwnmoError": "gwnmo_meta.errors",
    "ConfigError": "gwnmo_meta.errors",
    "DataError": "gwnmo_meta.errors",
    "CheckpointError": "gwnmo_meta.errors",
}

__all__ = [  # the same names as _LAZY (tested), spelled out for static analysis
    "__version__",
    "GWNMO",
    "DifferentiableGWNMO",
    "HG",
    "gwnmo_direction",
    "gwnmo_step",
    "gwnmo_delta",
    "CoordinateWeighting",
    "ThesisMLPWeighting",
    "FactoredWeighting",
    "build_weighting",
    "load_weighting",
    "weighting_is_prime",
    "RunConfig",
    "meta_train",
    "TrainResult",
    "evaluate_checkpoint",
    "FewShotConfig",
    "FewShotData",
    "prepare_fewshot",
    "TaskSpec",
    "Episode",
    "MethodConfig",
    "MetaMethod",
    "build_method",
    "GwnmoError",
    "ConfigError",
    "DataError",
    "CheckpointError",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import CheckpointError, ConfigError, DataError, GwnmoError
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint
    from gwnmo_meta.functional import gwnmo_delta, gwnmo_step
    from gwnmo_meta.optim.direction import gwnmo_direction
    from gwnmo_meta.optim.factored import FactoredWeighting
    from gwnmo_meta.optim.gwnmo import GWNMO, HG, DifferentiableGWNMO
    from gwnmo_meta.optim.nets import CoordinateWeighting, ThesisMLPWeighting, build_weighting
    from gwnmo_meta.optim.pretrained import load_weighting, weighting_is_prime
    from gwnmo_meta.tasks.episodes import Episode, TaskSpec
    from gwnmo_meta.tasks.fewshot import FewShotConfig, FewShotData, prepare_fewshot
    from gwnmo_meta.training.methods import MetaMethod, MethodConfig, build_method
    from gwnmo_meta.training.trainer import TrainResult, meta_train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # import once
        return value
    raise AttributeError(f"module 'gwnmo_meta' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
