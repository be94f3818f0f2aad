"""``gwnmo-meta train``: classic training with GWNMO's M learning online (thesis Tables 1-2)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gwnmo_meta import defaults, registry
from gwnmo_meta.cli.common import config_from, progress_bars, user_errors, value
from gwnmo_meta.cli.options import (
    METHOD,
    TASK,
    AllowDataChange,
    BackboneOpt,
    BaseBeta2,
    BaseMomentum,
    BaseOpt,
    ClassicOptimizer,
    ClassicSchedule,
    DataRoot,
    Device,
    Download,
    Quiet,
    Resume,
    SkipCheck,
    SourceDataset,
    Weighting,
    listing,
    opt,
    out,
)

if TYPE_CHECKING:
    from gwnmo_meta.training.classic import ClassicConfig

EXAMPLE = "gwnmo-meta train --dataset mnist --optimizer gwnmo --epochs 5 --out runs/classic"

# ClassicConfig's defaults, restated because its module imports torch, which --help does not wait
# for (tests/test_config_declared_once.py holds them equal)
CLASSIC = SimpleNamespace(
    dataset="mnist",
    data_root=None,
    download=False,
    skip_integrity_check=False,
    backbone="conv4",
    optimizer=registry.DEFAULT_METHOD,
    weighting="mlp",
    lr=None,
    meta_lr=defaults.CLASSIC_META_LR.value,
    hg_beta=defaults.CLASSIC_HG_BETA.value,
    epochs=5,
    batch_size=64,
    hidden=64,
    reps=1,
    weighting_from=None,
    freeze_weighting=False,
    max_train_images=None,
    device="auto",
    seed=0,
    val_fraction=defaults.CLASSIC_VAL_FRACTION,
    base="grad",
    base_momentum=defaults.BASE_MOMENTUM.value,
    base_beta2=defaults.BASE_BETA2.value,
)
ClassicDataset = Annotated[
    SourceDataset,
    opt(
        "--dataset", help=f"{listing(SourceDataset)}: its train split.", panel=TASK, metavar="NAME"
    ),
]
Optimizer = Annotated[
    ClassicOptimizer,
    opt("--optimizer", help=f"{listing(ClassicOptimizer)}.", panel=METHOD, metavar="NAME"),
]
ScheduleOpt = Annotated[
    ClassicSchedule | None,
    opt("--schedule", help="How M learns online (default: alg1).", panel=METHOD),
]
WeightingOpt = Annotated[
    Weighting,
    opt("--weighting", help=f"M: {listing(Weighting)}.", panel=METHOD, metavar="NAME"),
]
Lr = Annotated[
    float | None, opt("--lr", help="Step size α (default: the optimizer's).", panel=METHOD)
]
MetaLr = Annotated[float, opt("--meta-lr", help="Step size β of Adam on M.", panel=METHOD)]
HgBeta = Annotated[float, opt("--hg-beta", help="HG's hypergradient step size.", panel=METHOD)]
Epochs = Annotated[int, opt("--epochs", help="Epochs over the train split.", panel=TASK)]
BatchSize = Annotated[int, opt("--batch-size", help="Mini-batch size.", panel=TASK)]
Hidden = Annotated[int, opt("--hidden", help="Width of the target's hidden layer.", panel=TASK)]
Reps = Annotated[int, opt("--reps", help="Fresh targets in turn; M persists.", panel=TASK)]
WeightingFrom = Annotated[
    Path | None, opt("--weighting-from", help="Start M from a checkpoint.", panel=METHOD)
]
FreezeWeighting = Annotated[
    bool, opt("--freeze-weighting", help="Keep M fixed (with --weighting-from).", panel=METHOD)
]
MaxTrainImages = Annotated[
    int | None, opt("--max-train-images", help="Only the first N train images.", panel=TASK)
]
ValFraction = Annotated[
    float, opt("--val-fraction", help="Held-out share that selects the epoch.", panel=TASK)
]
ClassicSeed = Annotated[int, opt("--seed", help="Seed of the init, batches and val split.")]
TrainOut = Annotated[Path, out("Run folder.")]


@user_errors
def train(
    ctx: typer.Context,
    data_root: DataRoot = CLASSIC.data_root,
    download: Download = CLASSIC.download,
    skip_integrity_check: SkipCheck = CLASSIC.skip_integrity_check,
    dataset: ClassicDataset = CLASSIC.dataset,
    backbone: BackboneOpt = CLASSIC.backbone,
    optimizer: Optimizer = CLASSIC.optimizer,
    schedule: ScheduleOpt = None,
    weighting: WeightingOpt = CLASSIC.weighting,
    lr: Lr = CLASSIC.lr,
    meta_lr: MetaLr = CLASSIC.meta_lr,
    hg_beta: HgBeta = CLASSIC.hg_beta,
    epochs: Epochs = CLASSIC.epochs,
    batch_size: BatchSize = CLASSIC.batch_size,
    hidden: Hidden = CLASSIC.hidden,
    reps: Reps = CLASSIC.reps,
    weighting_from: WeightingFrom = CLASSIC.weighting_from,
    freeze_weighting: FreezeWeighting = CLASSIC.freeze_weighting,
    max_train_images: MaxTrainImages = CLASSIC.max_train_images,
    val_fraction: ValFraction = CLASSIC.val_fraction,
    base: BaseOpt = CLASSIC.base,
    base_momentum: BaseMomentum = CLASSIC.base_momentum,
    base_beta2: BaseBeta2 = CLASSIC.base_beta2,
    device: Device = CLASSIC.device,
    seed: ClassicSeed = CLASSIC.seed,
    out: TrainOut = Path("runs/train"),
    resume: Resume = False,
    allow_data_change: AllowDataChange = False,
    quiet: Quiet = False,
) -> None:
    """Classic training (thesis Tables 1-2): GWNMO trains a target on a full dataset."""
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.training.classic import ClassicConfig

    if schedule is not None and not registry.METHODS[optimizer.value].learned_optimizer:
        learned = " and ".join(registry.METHODS.names(lambda m: m.learned_optimizer))
        raise ConfigError(
            f"--schedule applies to {learned} only, not to --optimizer {value(optimizer)}"
        )
    cfg = config_from(ClassicConfig, ctx.params)
    run(cfg, out, progress=progress_bars(quiet), resume=resume, allow_data_change=allow_data_change)


def run(cfg: ClassicConfig, out: Path, **options: Any) -> None:
    """Train; print each rep's summary. Ctrl-C or SIGTERM: exit 130/143 with last.pt saved."""
    from gwnmo_meta.training.classic import train_classic

    try:
        results = train_classic(cfg, out, **options)
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: last.pt holds the current epoch's start
        from gwnmo_meta.io.interrupts import exit_code

        if not (out / "last.pt").is_file():
            raise
        typer.echo(f"interrupted; checkpoint saved to {out / 'last.pt'} (continue with --resume)")
        raise typer.Exit(exit_code(exc)) from None
    for r in results:
        typer.echo(f"rep {r.rep + 1}: {r.summary()}")
