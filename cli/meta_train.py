"""``gwnmo-meta meta-train``: meta-train GWNMO (or a baseline) on few-shot tasks."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gwnmo_meta.cli.common import (
    RUN,
    config_from,
    fail,
    given,
    progress_bars,
    relaunch,
    user_errors,
)
from gwnmo_meta.cli.options import (
    INNER,
    META,
    METHOD,
    OUTPUT,
    AdaptOpt,
    AllowDataChange,
    BackboneOpt,
    BaseBeta2,
    BaseMomentum,
    BaseOpt,
    ConvBias,
    DataRoot,
    Device,
    Download,
    HeadHidden,
    KeepImageSplit,
    LearnLr,
    Query,
    Quiet,
    Resume,
    Schedule,
    Seed,
    Shots,
    SkipCheck,
    TaskBatch,
    TaskDatasetOpt,
    TestClasses,
    TestDataset,
    TrainClasses,
    TrainedMethod,
    ValClasses,
    Ways,
    WeightingHidden,
    WeightingOpt,
    listing,
    opt,
    out,
    panel,
)

if TYPE_CHECKING:
    from gwnmo_meta.config import RunConfig

EXAMPLE = "gwnmo-meta meta-train --dataset mnist --shots 1 --meta-steps 300 --out runs/mnist"

MethodOpt = Annotated[
    TrainedMethod, opt("--method", help=f"{listing(TrainedMethod)}.", panel=METHOD, metavar="NAME")
]
ScheduleOpt = Annotated[
    Schedule | None,
    opt(
        "--schedule",
        help=f"{listing(Schedule)} (default: per method).",
        panel=METHOD,
        metavar="NAME",
    ),
]
LearnInit = Annotated[
    bool, opt("--learn-init/--no-learn-init", help="Meta-learn the init.", panel=INNER)
]
InnerSteps = Annotated[
    int, opt("--inner-steps", help="Inner steps on the support set.", panel=INNER)
]
InnerLr = Annotated[
    float | None, opt("--inner-lr", help="Step size α (default: the method's).", panel=INNER)
]
InnerBatch = Annotated[
    int | None, opt("--inner-batch", help="Support examples per step (default: all).", panel=INNER)
]
LearnLrOpt = Annotated[
    LearnLr, opt("--learn-lr", help=f"Learn α: {listing(LearnLr)}.", panel=META, metavar="MODE")
]
JudgeQueries = Annotated[
    int | None,
    opt("--judge-queries", help="alg1/alg2: query rows per class judging a step.", panel=META),
]
GradThroughNorm = Annotated[
    bool, opt("--grad-through-norm", help="Legacy: meta-gradient through ‖g‖.", panel=META)
]
MetaLr = Annotated[float, opt("--meta-lr", help="Meta step size β (Adam).", panel=META)]
FirstOrder = Annotated[bool, opt("--first-order", help="First-order meta-gradients.", panel=META)]
MetaBatch = Annotated[int, opt("--meta-batch", help="Tasks per meta-step.", panel=META)]
MetaSteps = Annotated[int, opt("--meta-steps", help="Meta-training steps.", panel=META)]
ValEvery = Annotated[
    int, opt("--val-every", help="Validate and checkpoint every N steps.", panel=META)
]
ValTasks = Annotated[int, opt("--val-tasks", help="Meta-val tasks per validation.", panel=META)]
DataSeed = Annotated[
    int | None, opt("--data-seed", help="Seed of the data side (default: --seed).", panel=META)
]
MetaDevice = Annotated[str, panel(Device, META)]
MetaSeed = Annotated[int, panel(Seed, META)]
RunOut = Annotated[Path, out("Run folder (RUN_DIR).")]
TestTasks = Annotated[
    int, opt("--test-tasks", help="Then score best.pt on N meta-test tasks.", panel=OUTPUT)
]
ConfigOpt = Annotated[
    Path | None,
    opt("--config", help="Relaunch RUN_DIR/config.json; flags override.", panel=OUTPUT),
]


@user_errors
def meta_train(
    ctx: typer.Context,
    data_root: DataRoot = RUN.data_root,
    download: Download = RUN.download,
    skip_integrity_check: SkipCheck = RUN.skip_integrity_check,
    dataset: TaskDatasetOpt = RUN.dataset,
    test_dataset: TestDataset = RUN.test_dataset,
    backbone: BackboneOpt = RUN.backbone,
    train_classes: TrainClasses = RUN.train_classes,
    val_classes: ValClasses = RUN.val_classes,
    test_classes: TestClasses = RUN.test_classes,
    keep_image_split: KeepImageSplit = RUN.keep_image_split,
    ways: Ways = RUN.ways,
    shots: Shots = RUN.shots,
    query: Query = RUN.query,
    method: MethodOpt = RUN.method,
    schedule: ScheduleOpt = RUN.schedule,
    weighting: WeightingOpt = RUN.weighting,
    weighting_hidden: WeightingHidden = RUN.weighting_hidden,
    head_hidden: HeadHidden = RUN.head_hidden,
    base: BaseOpt = RUN.base,
    base_momentum: BaseMomentum = RUN.base_momentum,
    base_beta2: BaseBeta2 = RUN.base_beta2,
    adapt: AdaptOpt = RUN.adapt,
    conv_bias: ConvBias = RUN.conv_bias,
    learn_init: LearnInit = RUN.learn_init,
    inner_steps: InnerSteps = RUN.inner_steps,
    inner_lr: InnerLr = RUN.inner_lr,
    inner_batch: InnerBatch = RUN.inner_batch,
    task_batch: TaskBatch = RUN.task_batch,
    learn_lr: LearnLrOpt = RUN.learn_lr,
    judge_queries: JudgeQueries = RUN.judge_queries,
    grad_through_norm: GradThroughNorm = RUN.grad_through_norm,
    meta_lr: MetaLr = RUN.meta_lr,
    first_order: FirstOrder = RUN.first_order,
    meta_batch: MetaBatch = RUN.meta_batch,
    meta_steps: MetaSteps = RUN.meta_steps,
    val_every: ValEvery = RUN.val_every,
    val_tasks: ValTasks = RUN.val_tasks,
    device: MetaDevice = RUN.device,
    seed: MetaSeed = RUN.seed,
    data_seed: DataSeed = RUN.data_seed,
    out: RunOut = Path("runs/meta-train"),
    resume: Resume = False,
    allow_data_change: AllowDataChange = False,
    test_tasks: TestTasks = 0,
    config: ConfigOpt = None,
    quiet: Quiet = False,
) -> None:
    """Meta-train GWNMO or a baseline on few-shot tasks; checkpoints and events go to --out."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError

    if test_tasks < 0:
        raise ConfigError(f"--test-tasks must be >= 0, got {test_tasks}")
    cfg = config_from(RunConfig, ctx.params)
    if config is not None:
        cfg = relaunch(ctx, config, cfg)
        out = out if given(ctx, "out") else config.parent
    progress = progress_bars(quiet)
    run(cfg, out, test_tasks, progress, resume=resume, allow_data_change=allow_data_change)


def run(cfg: RunConfig, out: Path, test_tasks: int, progress: bool, **options: Any) -> None:
    """Meta-train ``cfg`` into ``out`` and report (rank 0); then score best.pt on ``test_tasks``.

    Args:
        cfg: the run's configuration.
        out: the RUN_DIR.
        test_tasks: meta-test tasks to score best.pt on afterwards (0: none).
        progress: draw progress bars.
        **options: ``resume`` and ``allow_data_change``, passed to ``meta_train``.
    """
    from gwnmo_meta.training import distributed
    from gwnmo_meta.training.trainer import TrainingDiverged
    from gwnmo_meta.training.trainer import meta_train as train

    try:
        result = train(cfg, out, progress=progress, check_test=test_tasks > 0, **options)
    except TrainingDiverged as exc:  # the global meta-loss: every rank stops, rank 0 says why
        if not distributed.world().is_main:
            raise typer.Exit(1) from None
        fail(str(exc), 1)
    echo = typer.echo if distributed.world().is_main else lambda *a, **k: None  # rank 0 reports
    if result.interrupted:
        echo(
            f"interrupted at meta-step {result.steps_done}; "
            f"checkpoint saved to {out / 'last.pt'} (continue with --resume)"
        )
        raise typer.Exit(128 + (result.signal or signal.SIGINT))  # the trainer sets it
    best = "n/a" if result.best_val_accuracy is None else f"{100 * result.best_val_accuracy:.2f}%"
    echo(f"meta-trained {result.steps_done} steps; best meta-val accuracy {best}; run dir {out}")
    if test_tasks:
        score_best(out, test_tasks, progress, echo)


def score_best(out: Path, tasks: int, progress: bool, echo: Any) -> None:
    """Score ``out``/best.pt on ``tasks`` meta-test tasks; rank 0 writes ``out``/test.json."""
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint
    from gwnmo_meta.io.atomic import atomic_write_json
    from gwnmo_meta.training import distributed

    # under torchrun the test tasks are sharded over the ranks and gathered
    summary = evaluate_checkpoint(out / "best.pt", tasks=tasks, progress=progress)
    echo(
        f"meta-test ({summary['dataset']}, {summary['ways']}-way {summary['shots']}-shot): {summary['text']}"
    )
    if distributed.world().is_main:
        atomic_write_json(out / "test.json", summary)
