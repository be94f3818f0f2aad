"""Classic training mode (thesis Tables 1 and 2): GWNMO as an online meta-optimizer in ordinary training.

A frozen backbone E gives features; the target T (two linear layers with a ReLU between, as in
the thesis) is trained on the dataset's full torchvision train split, mini-batch by mini-batch,
while the weighting network M learns online:

* ``alg1`` (Algorithm 1): at batch t the loss L_t = f(T(φ_t; X_t), y_t) is evaluated at φ_t,
  which depends on θ only through the previous update φ_t = φ_{t−1} − αΔ_{t−1}(θ). The update
  φ_{t+1} = φ_t − αΔ_t(θ_t) is formed with the current θ_t, then θ takes its Adam step on ∇_θ L_t.
* ``alg2`` (Algorithm 2): at batch t, φ_{t+1} = φ_t − αΔ_t(θ_t); the loss on the NEXT batch
  L' = f(T(φ_{t+1}; X_{t+1}), y_{t+1}) gives θ its Adam step before the next weighting is formed.

On a stream both meta-losses are "the next batch's loss after the previous update": the
algorithms differ only in whether θ's step lands before (Alg 2) or after (Alg 1) the next
weighting is computed. That is why thesis Table 2 shows near-identical columns.

Baselines: ``adam``, ``sgd`` and ``hg`` (per-element hypergradient step sizes) as torch
optimizers on T.

Selection: a seeded, class-stratified ``val_fraction`` (default 10%) of the train split is held
out from training (``split_validation``). After every epoch T is scored on it and on the test
split; the epoch with the best validation accuracy is *selected*, and its test accuracy/loss is
the honest result (``RepResult.selected``). The thesis reported the best test accuracy/loss over
epochs (selection on the test set); that is kept as ``best_accuracy``/``best_loss`` for comparison
with its tables, beside the final epoch's. ``val_fraction=0`` trains on the whole train split
and reports only the latter two.

Resume: with an output folder, ``last.pt`` records the run at its start and after every epoch;
SIGINT/SIGTERM stops it with ``last.pt`` holding the start of the current epoch, and
``train_classic(..., resume=True)`` reaches exactly the uninterrupted run's results and M (the
latest update's graph, which the next batch's meta-gradient runs through, is recomputed from the
inputs the checkpoint keeps).

Modules: this one holds the options (:class:`ClassicConfig`) and the entry point
(:func:`train_classic`); ``classic_learners`` the target and the learners (:class:`OnlineGWNMO`,
:class:`TorchLearner`); ``classic_run`` the run itself (data, epochs, checkpoints, results).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gwnmo_meta import defaults
from gwnmo_meta.config import check_base, check_positive, check_seed
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import DEFAULT_METHOD, METHODS, SCHEDULES, WEIGHTINGS, MethodInfo
from gwnmo_meta.training.classic_learners import (
    OnlineGWNMO,
    TorchLearner,
    evaluate_target,
    load_weighting_state,
    make_target,
)
from gwnmo_meta.training.classic_run import (
    ClassicRun,
    EpochRecord,
    Features,
    RepResult,
    load_features,
    split_validation,
)

# public names of the classic modules, importable from here
__all__ = [
    "CLASSIC_ARTEFACTS",
    "OPTIMIZERS",
    "RESUMABLE_CHANGES",
    "VAL_FRACTION",
    "ClassicConfig",
    "EpochRecord",
    "OnlineGWNMO",
    "RepResult",
    "TorchLearner",
    "evaluate_target",
    "load_features",
    "load_weighting_state",
    "make_target",
    "split_validation",
    "train_classic",
    "write_results",
]

OPTIMIZERS = METHODS.names(lambda m: m.classic)  # the methods ``train --optimizer`` accepts
VAL_FRACTION = defaults.CLASSIC_VAL_FRACTION  # share of each class held out to select the epoch


@dataclass
class ClassicConfig:
    """Options of ``gwnmo-meta train``."""

    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = False
    skip_integrity_check: bool = False
    backbone: str = "conv4"
    optimizer: str = DEFAULT_METHOD
    schedule: str = "alg1"
    weighting: str = "mlp"
    lr: float | None = None
    meta_lr: float = defaults.CLASSIC_META_LR.value
    hg_beta: float = defaults.CLASSIC_HG_BETA.value
    epochs: int = 5
    batch_size: int = 64
    hidden: int = 64
    reps: int = 1
    weighting_from: str | None = None
    freeze_weighting: bool = False
    max_train_images: int | None = None
    device: str = "auto"
    seed: int = 0
    val_fraction: float = VAL_FRACTION
    base: str = "grad"  # GWNMO's base direction: grad (the thesis), momentum or adam
    base_momentum: float = defaults.BASE_MOMENTUM.value  # momentum's μ, Adam's β1
    base_beta2: float = defaults.BASE_BETA2.value  # Adam's β2

    @property
    def info(self) -> MethodInfo:
        """The registry's facts about ``optimizer``."""
        return METHODS[self.optimizer]

    def validate(self) -> ClassicConfig:
        """Check names against the registry and the counts and step sizes; returns ``self``."""
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if not SCHEDULES.check(self.schedule).classic:
            classic = ", ".join(SCHEDULES.names(lambda s: s.classic))
            raise ConfigError(
                f"--schedule {self.schedule} is not for classic training; choose {classic}"
            )
        WEIGHTINGS.check(self.weighting)
        for name in ("epochs", "batch_size", "hidden", "reps"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}"
                )
        for name in ("meta_lr", "hg_beta"):
            check_positive(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.lr is not None:
            check_positive("--lr", self.lr)
        check_seed("--seed", self.seed)
        if self.max_train_images is not None and self.max_train_images <= 0:
            raise ConfigError(f"--max-train-images must be positive, got {self.max_train_images}")
        if not 0 <= self.val_fraction < 1:  # also refuses NaN
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if not self.info.learned_optimizer and (self.weighting_from or self.freeze_weighting):
            raise ConfigError(
                "--weighting-from/--freeze-weighting need --optimizer gwnmo or gwnmo-prime"
            )
        if self.freeze_weighting and not self.weighting_from:
            raise ConfigError("--freeze-weighting needs --weighting-from CHECKPOINT")
        check_base(
            self.base,
            self.base_momentum,
            self.base_beta2,
            self.info.learned_optimizer,
            f"--optimizer {self.optimizer}",
        )
        return self

    @property
    def step_size(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.base in defaults.CLASSIC_BASE_LR:  # GWNMO over a base: the classic scan's choice
            return defaults.CLASSIC_BASE_LR[self.base].value
        tuned = METHODS.check(self.optimizer, "--optimizer").classic_lr  # MethodInfo.classic_lr
        if tuned is None:
            raise ConfigError(f"--optimizer {self.optimizer} has no default step size; give --lr")
        return tuned.value


CLASSIC_ARTEFACTS = ("results.json", "weighting.pt", "last.pt", "events.out.tfevents.*")
# ClassicConfig fields a resumed run may change (they do not alter what is computed)
RESUMABLE_CHANGES = {"device", "data_root", "download"}


def train_classic(
    cfg: ClassicConfig,
    out: Path | None = None,
    *,
    progress: bool = True,
    features: Features | None = None,
    resume: bool = False,
    allow_data_change: bool = False,
) -> list[RepResult]:
    """Train ``cfg.reps`` fresh targets in sequence (M persists across them).

    With ``out``, ``last.pt`` records the run at its start and after every epoch. SIGINT or
    SIGTERM stops the run (``KeyboardInterrupt``, its ``signum`` attribute naming the signal)
    with ``last.pt`` holding the start of the current epoch; ``resume`` continues from it and
    reaches exactly the uninterrupted run's results and M.

    Args:
        cfg: the options (validated here, before anything is loaded or written).
        out: folder for TensorBoard events, ``results.json``, M's ``weighting.pt`` and
            ``last.pt``; locked for the whole run and refused if it already holds a run, unless
            ``resume`` (``None``: write nothing).
        progress: show progress bars.
        features: precomputed ``(x_train, y_train, x_test, y_test)`` (default: load them).
        resume: continue the run in ``out`` from its ``last.pt`` (same options, except
            ``RESUMABLE_CHANGES``).
        allow_data_change: resume even if the data differ from the run's (fingerprint).

    Returns:
        One :class:`RepResult` per rep.
    """
    from gwnmo_meta.device import resolve_device
    from gwnmo_meta.memory import check_classic

    cfg.validate()
    device = resolve_device(cfg.device)
    check_classic(cfg, device)  # what cannot fit in memory is refused before any work
    # a bad --weighting-from is refused before any data is loaded or anything is written
    start_state = _start_state(cfg)
    if out is None:
        if resume:
            raise ConfigError("resume needs the run's folder (--out)")
        return ClassicRun(cfg, None, device, progress).train(start_state, features)
    out = Path(out)
    if resume and not (out / "last.pt").is_file():
        raise ConfigError(f"--resume: no checkpoint to resume in {out} (expected last.pt)")
    return _train_in_folder(
        cfg, out, device, progress, start_state, features, resume, allow_data_change
    )


def _start_state(cfg: ClassicConfig) -> dict[str, Tensor] | None:
    """M's parameters from ``--weighting-from`` (``None`` without it), checked against ``--base``."""
    if not cfg.weighting_from:
        return None
    state = load_weighting_state(cfg.weighting_from)
    from gwnmo_meta.optim.pretrained import weighting_base

    trained = weighting_base(cfg.weighting_from)
    if trained != cfg.base:
        raise ConfigError(
            f"the weighting network in {cfg.weighting_from} was trained over --base {trained}; "
            f"give --base {trained}"
        )
    return state


def _train_in_folder(
    cfg: ClassicConfig,
    out: Path,
    device: torch.device,
    progress: bool,
    start_state: dict[str, Tensor] | None,
    features: Features | None,
    resume: bool,
    allow_data_change: bool,
) -> list[RepResult]:
    """:func:`train_classic` writing to ``out``: locked, refused if it holds another run."""
    from gwnmo_meta.io.atomic import remove_stale_temps
    from gwnmo_meta.io.checkpoint import KIND_CLASSIC_RUN, load_checkpoint
    from gwnmo_meta.io.interrupts import Interrupts
    from gwnmo_meta.io.runlock import RunFolderLost, RunLock, remove_if_empty
    from gwnmo_meta.training.run_folder import check_writable

    created = not out.exists()
    check_writable(out)
    interrupts = Interrupts()  # from here on SIGTERM, like SIGINT, unwinds (releasing the lock)
    try:
        with interrupts, RunLock(out) as lock:
            remove_stale_temps(out)
            ckpt = None
            if resume:
                ckpt = load_checkpoint(out / "last.pt", KIND_CLASSIC_RUN)
                _check_resume(cfg, ckpt)
            else:
                found = sorted({p.name for pattern in CLASSIC_ARTEFACTS for p in out.glob(pattern)})
                if found:
                    raise ConfigError(
                        f"{out} already holds a run ({', '.join(found)}); pass --resume to "
                        "continue it or choose another --out"
                    )
            run = ClassicRun(cfg, out, device, progress, lock=lock, interrupts=interrupts)
            results = run.train(start_state, features, ckpt, allow_data_change)
            lock.verify()
            write_results(out / "results.json", cfg, results)
            return results
    except BaseException as exc:
        # refused or failed before writing anything: leave no trace (but a folder that replaced
        # ours is someone else's)
        if created and not isinstance(exc, RunFolderLost):
            remove_if_empty(out)
        raise


def _check_resume(cfg: ClassicConfig, ckpt: dict[str, Any]) -> None:
    saved = ckpt["config"]
    diff = [
        k
        for k, v in dataclasses.asdict(cfg).items()
        if k not in RESUMABLE_CHANGES and saved.get(k) != v
    ]
    if diff:
        raise ConfigError(
            "--resume with options that differ from the checkpoint's: "
            + ", ".join(
                f"{k} (checkpoint {saved.get(k)!r}, given {getattr(cfg, k)!r})" for k in diff
            )
        )


def write_results(path: Path, cfg: ClassicConfig, results: list[RepResult]) -> None:
    """``results.json``: the config, the step size and, per rep, val-selected/best/final metrics and every epoch."""
    from gwnmo_meta.io.atomic import atomic_write_json

    summary = {
        "config": dataclasses.asdict(cfg),
        "step_size": cfg.step_size,
        "reps": [r.to_dict() for r in results],
    }
    atomic_write_json(path, summary)
