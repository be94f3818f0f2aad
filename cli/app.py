"""Typer application behind the ``gwnmo-meta`` console script.

Choices (``--method``, ``--dataset`` ...) come from :mod:`gwnmo_meta.registry`; options are
``Annotated`` types declared once and shared by the commands. Heavy imports (torch,
learn2learn) happen inside the commands so ``--help`` starts fast.

One error style: user mistakes (``GwnmoError``) and usage errors (a bad option value, a missing
argument, an unknown option) print one ``error: ...`` line on stderr and exit with code 2.
Progress bars are drawn only when stderr is a terminal, and never with ``--quiet``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from typer.core import TyperGroup

from gwnmo_meta import defaults, registry

if TYPE_CHECKING:
    from gwnmo_meta.config import RunConfig


class OneLineErrors(TyperGroup):
    """Typer's group, with usage errors printed as one ``error:`` line (exit 2) instead of a panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except Exception as exc:  # click's exceptions, vendored by typer: duck-typed
            if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `gwnmo-meta`: the help, as click
                typer.echo(exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            message = exc.format_message().replace(": Value error, ", ": ")  # typer's choice check
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="gwnmo-meta",
    cls=OneLineErrors,
    help="GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _rank_prefix() -> str | None:
    """Under torchrun: ``None`` on ranks > 0 before they joined the process group (the error came
    from the command line, every rank has it and rank 0 prints it), else ``"rank N: "``."""
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    if rank == "0":
        return ""
    dist = sys.modules.get("gwnmo_meta.training.distributed")
    return f"rank {rank}: " if dist is not None and dist.world().active else None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn gwnmo-meta's user errors into one line + exit 2 (no traceback); a lost rank: exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gwnmo_meta.errors import GwnmoError
        from gwnmo_meta.io.interrupts import Interrupts, exit_code

        try:
            with Interrupts():  # SIGTERM, like SIGINT, unwinds: exit 143 (130 for SIGINT)
                return fn(*args, **kwargs)
        except GwnmoError as exc:
            code = getattr(exc, "exit_code", 2)
            prefix = _rank_prefix()
            if prefix is None:
                raise typer.Exit(code) from None
            fail(prefix + str(exc), code)
        except KeyboardInterrupt as exc:
            fail("interrupted", exit_code(exc))
        except Exception as exc:
            dist = sys.modules.get("gwnmo_meta.training.distributed")
            if dist is None or not isinstance(exc, dist.RankFailure):
                raise
            fail(str(exc), 1)  # another rank died or stopped answering

    return wrapper


def progress_bars(quiet: bool) -> bool:
    """Whether to draw progress bars: not with ``--quiet``, and only onto a terminal."""
    return not quiet and sys.stderr.isatty()


# ---- choices, from the registry -------------------------------------------------------------
def choices(name: str, entries: Mapping[str, object]) -> type[Enum]:
    """A str Enum of the registered names, which Typer shows and checks as the option's choices."""
    return Enum(name, {n: n for n in entries}, type=str)  # type: ignore[return-value]


Dataset = choices("Dataset", registry.DATASETS)
SourceDataset = choices(  # read from disk (not a pool)
    "SourceDataset", {d: None for d in registry.DATASETS.names(lambda i: not i.sources)}
)
Method = choices("Method", registry.METHODS)
# meta-train offers only what it trains (the reference classifiers are scored by evaluate --method)
TrainedMethod = choices(
    "TrainedMethod", {m: None for m in registry.METHODS.names(lambda i: i.engine != "reference")}
)
ClassicOptimizer = choices(
    "ClassicOptimizer", {m: None for m in registry.METHODS.names(lambda i: i.classic)}
)
Schedule = choices("Schedule", registry.SCHEDULES)
ClassicSchedule = choices(
    "ClassicSchedule", {s: None for s in registry.SCHEDULES.names(lambda i: i.classic)}
)
LearnLr = choices("LearnLr", registry.LEARN_LR)
Weighting = choices("Weighting", registry.WEIGHTINGS)
BaseDirection = choices("BaseDirection", registry.BASES)
Backbone = choices("Backbone", registry.BACKBONES)
Adapt = choices("Adapt", registry.ADAPT)


def value(choice: Enum | None) -> Any:
    """The string behind a choice (``None`` stays ``None``)."""
    return None if choice is None else choice.value


def _device(name: str) -> str:
    from gwnmo_meta.errors import ConfigError

    try:
        return registry.check_device(name)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def out_folder(value: str | Path) -> Path:
    """``--out``'s parser: an empty name (it would mean the current folder) is a usage error."""
    if str(value) == "":
        raise typer.BadParameter("is empty; name a folder (. for the current one)")
    return Path(value)


def _path(p: Path | None) -> str | None:
    return None if p is None else str(p)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (on the command line or through the environment)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def relaunch(ctx: typer.Context, path: Path, flags: RunConfig) -> RunConfig:
    """The run configuration saved in ``path``, with the options the user gave overriding it.

    Args:
        ctx: the command's context (which options were given explicitly).
        path: a RUN_DIR/config.json written by meta-train.
        flags: the configuration built from the command's options (defaults included).

    Returns:
        The saved configuration, updated with every explicitly given option.
    """
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError

    saved = RunConfig.load(path)
    explicit = {k: v for k, v in flags.to_dict().items() if given(ctx, k)}
    cfg = saved.replace(**explicit)
    if "schedule" in explicit and not registry.METHODS.check(cfg.method).learned_optimizer:
        raise ConfigError(f"--schedule does not apply to the run's method {cfg.method}")
    return cfg


# ---- help panels and shared options ---------------------------------------------------------
DATA, TASK, METHOD, INNER, META, OUTPUT = (
    "Data",
    "Task",
    "Method",
    "Inner loop",
    "Meta-training",
    "Output",
)
NO_CKPT, PROTOCOL = "Without a checkpoint (--method)", "Suite protocol"


def panel(option: Any, name: str) -> Any:
    """``option`` (an ``Annotated[T, typer.Option(...)]`` type) listed under the help panel ``name``."""
    base, info = get_args(option)
    info = copy.copy(info)
    info.rich_help_panel = name
    return Annotated[base, info]


DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help=(
            "Folder with the datasets (default: $GWNMO_DATA, else "
            "$XDG_CACHE_HOME/gwnmo-meta/data, else ~/.cache/gwnmo-meta/data)."
        ),
        rich_help_panel=DATA,
    ),
]
Download = Annotated[
    bool,
    typer.Option(
        "--download/--no-download",
        help="Let torchvision download missing datasets.",
        rich_help_panel=DATA,
    ),
]
SkipCheck = Annotated[
    bool,
    typer.Option(
        "--skip-integrity-check",
        help="Accept a re-packed CIFAR-10 copy whose md5 sums differ from the originals.",
        rich_help_panel=DATA,
    ),
]
TaskDatasetOpt = Annotated[
    Dataset,
    typer.Option(
        "--dataset",
        help="Dataset the tasks are drawn from (mixed: the 30 classes of all three, class-disjoint).",
        rich_help_panel=DATA,
    ),
]
TestDataset = Annotated[
    SourceDataset | None,
    typer.Option(
        "--test-dataset",
        help="With --dataset mixed: leave this dataset out; its ten classes are meta-test, the "
        "other two datasets give meta-train and a class-disjoint meta-val.",
        rich_help_panel=DATA,
    ),
]
TrainClasses = Annotated[
    str | None,
    typer.Option(
        "--train-classes",
        help="Meta-train classes, e.g. 0-4; on mixed dataset:class, e.g. cifar10:0-4,fmnist:2 "
        "or fmnist (all ten). Default split: gwnmo-meta splits.",
        rich_help_panel=DATA,
    ),
]
ValClasses = Annotated[
    str | None,
    typer.Option(
        "--val-classes",
        help="Class-disjoint meta-val classes (single datasets default to held-out images of the "
        "meta-train classes).",
        rich_help_panel=DATA,
    ),
]
TestClasses = Annotated[
    str | None,
    typer.Option(
        "--test-classes", help="Meta-test classes, e.g. 5-9 or cifar10:7-9.", rich_help_panel=DATA
    ),
]
KeepImageSplit = Annotated[
    bool,
    typer.Option(
        "--keep-image-split",
        help="Use torchvision's train images for meta-train/val and its test images for meta-test.",
        rich_help_panel=DATA,
    ),
]
BackboneOpt = Annotated[
    Backbone,
    typer.Option(
        "--backbone",
        help="Frozen feature extractor E (conv4 is pre-trained on the meta-train classes only).",
        rich_help_panel=DATA,
    ),
]
Ways = Annotated[int, typer.Option("--ways", help="N: classes per task.", rich_help_panel=TASK)]
Shots = Annotated[
    int, typer.Option("--shots", help="K: support examples per class.", rich_help_panel=TASK)
]
Query = Annotated[
    int, typer.Option("--query", help="Q: query examples per class.", rich_help_panel=TASK)
]
WeightingOpt = Annotated[
    Weighting,
    typer.Option(
        "--weighting",
        help="Weighting network M: per output unit (factored, the default), per coordinate, or the thesis mlp.",
        rich_help_panel=METHOD,
    ),
]
WeightingHidden = Annotated[
    int,
    typer.Option(
        "--weighting-hidden",
        help="Hidden width of M (smaller: cheaper M on large targets); "
        + defaults.WEIGHTING_HIDDEN.describe("default"),
        rich_help_panel=METHOD,
    ),
]
BaseOpt = Annotated[
    BaseDirection,
    typer.Option(
        "--base",
        help=(
            "Direction M weights (gwnmo/gwnmo-prime only): grad (the thesis: uniform h is SGD), "
            "momentum (SGD's momentum buffer) or adam (Adam's step m̂/(√v̂+ε)); M also reads "
            "the base's state."
        ),
        rich_help_panel=METHOD,
    ),
]
BaseMomentum = Annotated[
    float,
    typer.Option(
        "--base-momentum",
        help="--base momentum's μ and --base adam's β1; "
        + defaults.BASE_MOMENTUM.describe("default"),
        rich_help_panel=METHOD,
    ),
]
BaseBeta2 = Annotated[
    float,
    typer.Option(
        "--base-beta2",
        help="--base adam's β2; " + defaults.BASE_BETA2.describe("default"),
        rich_help_panel=METHOD,
    ),
]
HeadHidden = Annotated[
    int | None,
    typer.Option(
        "--head-hidden",
        help="Target head: two linear layers with this hidden width (default: one linear layer).",
        rich_help_panel=METHOD,
    ),
]
AdaptOpt = Annotated[
    Adapt,
    typer.Option(
        "--adapt",
        help=(
            "What the inner loop adapts: head (a head on frozen, cached backbone features) or all "
            "(conv4 + linear head from images, MAML's standard setting; --backbone is unused)."
        ),
        rich_help_panel=METHOD,
    ),
]
ConvBias = Annotated[
    bool,
    typer.Option(
        "--conv-bias/--no-conv-bias",
        help=(
            "--adapt all: give conv4's convolutions biases (BatchNorm cancels them; off by "
            "default, as in standard conv4)."
        ),
        rich_help_panel=METHOD,
    ),
]
TaskBatch = Annotated[
    bool,
    typer.Option(
        "--task-batch/--no-task-batch",
        help=(
            "Adapt each meta-batch's tasks together in one task-batched inner loop (default): the "
            "same per-task maths in fewer, larger tensor ops, ~2.5x faster GWNMO meta-steps on CPU "
            "(BENCHMARKS.md section 4), evaluation batched too. --no-task-batch adapts one task at "
            "a time, as the committed benchmark results were computed (less memory). "
            "MAML/Meta-SGD always adapt one task at a time."
        ),
        rich_help_panel=INNER,
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="DEVICE",
        callback=_device,
        help="auto (CUDA if present), cpu, cuda, cuda:N or mps.",
    ),
]
Seed = Annotated[
    int, typer.Option("--seed", help="Seed for tasks, initialisations and meta-training.")
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress bars (they are drawn only when stderr is a terminal anyway).",
        rich_help_panel=OUTPUT,
    ),
]

MetaDevice = panel(Device, META)
MetaSeed = panel(Seed, META)


def _print_version(flag: bool) -> None:
    if flag:
        from gwnmo_meta import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the gwnmo-meta version and exit.",
        ),
    ] = False,
) -> None:
    """GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks."""


@app.command()
def version() -> None:
    """Print the gwnmo-meta version."""
    _print_version(True)


@app.command("meta-train")
@user_errors
def meta_train_cmd(
    ctx: typer.Context,
    dataset: TaskDatasetOpt = "mnist",
    test_dataset: TestDataset = None,
    data_root: DataRoot = None,
    download: Download = False,
    skip_integrity_check: SkipCheck = False,
    backbone: BackboneOpt = "conv4",
    train_classes: TrainClasses = None,
    val_classes: ValClasses = None,
    test_classes: TestClasses = None,
    keep_image_split: KeepImageSplit = False,
    ways: Ways = 5,
    shots: Shots = 1,
    query: Query = 15,
    method: Annotated[
        TrainedMethod,
        typer.Option(
            "--method",
            help="Learned optimizer or baseline (reference classifiers: evaluate --method).",
            rich_help_panel=METHOD,
        ),
    ] = registry.DEFAULT_METHOD,
    schedule: Annotated[
        Schedule | None,
        typer.Option(
            "--schedule",
            help=(
                "Meta-training objective: alg2 (thesis Algorithm 2: each inner step judged by the "
                "loss on the next batch after that one step), alg1 (the same, meta-update one "
                "meta-step late: thesis Algorithm 1) or unrolled (query loss after all inner "
                "steps, MAML's objective). Default: alg2 for gwnmo/gwnmo-prime, unrolled otherwise."
            ),
            rich_help_panel=METHOD,
        ),
    ] = None,
    weighting: WeightingOpt = defaults.WEIGHTING,
    weighting_hidden: WeightingHidden = int(defaults.WEIGHTING_HIDDEN.value),
    head_hidden: HeadHidden = None,
    learn_init: Annotated[
        bool,
        typer.Option(
            "--learn-init/--no-learn-init",
            help="Meta-learn the target head's initialisation too.",
            rich_help_panel=METHOD,
        ),
    ] = True,
    inner_steps: Annotated[
        int,
        typer.Option(
            "--inner-steps", help="Inner-loop steps on the support set.", rich_help_panel=INNER
        ),
    ] = 5,
    inner_lr: Annotated[
        float | None,
        typer.Option(
            "--inner-lr",
            help="Inner step size α (default: the method's: "
            + defaults.describe_per_method(defaults.INNER_LR)
            + "; gwnmo over --base adam: adam's, over --base momentum: sgd's × (1 − μ)).",
            rich_help_panel=INNER,
        ),
    ] = None,
    inner_batch: Annotated[
        int | None,
        typer.Option(
            "--inner-batch",
            help=(
                "Inner steps on class-balanced mini-batches of this many support examples (a "
                "multiple of --ways), walking the support set; default: the whole support set."
            ),
            rich_help_panel=INNER,
        ),
    ] = None,
    judge_queries: Annotated[
        int | None,
        typer.Option(
            "--judge-queries",
            help=(
                "Look-ahead schedules (alg1, alg2): judge each inner step on this many random "
                "query examples per class, drawn afresh per step (unbiased); default: all."
            ),
            rich_help_panel=META,
        ),
    ] = None,
    learn_lr: Annotated[
        LearnLr,
        typer.Option(
            "--learn-lr",
            help=(
                "Meta-learn the inner step size α (log-parameterised; gwnmo, gwnmo-prime, maml, "
                "hg, sgd): off, global, per tensor, or per tensor and inner step (tensor-step)."
            ),
            rich_help_panel=INNER,
        ),
    ] = "off",
    grad_through_norm: Annotated[
        bool,
        typer.Option(
            "--grad-through-norm",
            help=(
                "Legacy, for study: let the meta-gradient flow through GWNMO's normaliser ‖g‖ (the "
                "step-length loophole that degrades a learned init; docs/ALGORITHMS.md)."
            ),
            rich_help_panel=META,
        ),
    ] = False,
    base: BaseOpt = "grad",
    base_momentum: BaseMomentum = defaults.BASE_MOMENTUM.value,
    base_beta2: BaseBeta2 = defaults.BASE_BETA2.value,
    task_batch: TaskBatch = True,
    adapt: AdaptOpt = "head",
    conv_bias: ConvBias = False,
    meta_lr: Annotated[
        float,
        typer.Option(
            "--meta-lr",
            help="Meta step size β (Adam on θ and the learned init); "
            + defaults.META_LR.describe("β"),
            rich_help_panel=META,
        ),
    ] = defaults.META_LR.value,
    first_order: Annotated[
        bool,
        typer.Option(
            "--first-order",
            help="First-order meta-gradients (no second derivatives).",
            rich_help_panel=META,
        ),
    ] = False,
    meta_batch: Annotated[
        int, typer.Option("--meta-batch", help="Tasks per meta-step.", rich_help_panel=META)
    ] = 4,
    meta_steps: Annotated[
        int, typer.Option("--meta-steps", help="Meta-training steps.", rich_help_panel=META)
    ] = 1000,
    val_every: Annotated[
        int,
        typer.Option(
            "--val-every",
            help="Validate (and checkpoint) every this many meta-steps.",
            rich_help_panel=META,
        ),
    ] = 100,
    val_tasks: Annotated[
        int,
        typer.Option("--val-tasks", help="Meta-val tasks per validation.", rich_help_panel=META),
    ] = 200,
    device: MetaDevice = "auto",
    seed: MetaSeed = 0,
    data_seed: Annotated[
        int | None,
        typer.Option(
            "--data-seed",
            help="Seed of the data side (conv4 pre-training, held-out image split); default --seed.",
            rich_help_panel=META,
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            parser=out_folder,
            metavar="<path>",
            help="RUN_DIR for checkpoints, config and TensorBoard events.",
            rich_help_panel=OUTPUT,
        ),
    ] = Path("runs/meta-train"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the run in --out from its last.pt.", rich_help_panel=OUTPUT
        ),
    ] = False,
    allow_data_change: Annotated[
        bool,
        typer.Option(
            "--allow-data-change",
            help="With --resume: continue even if the data differ from those the run was trained on.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    test_tasks: Annotated[
        int,
        typer.Option(
            "--test-tasks",
            help="After training, evaluate best.pt on this many meta-test tasks (0: skip).",
            rich_help_panel=OUTPUT,
        ),
    ] = 0,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help=(
                "Relaunch the run of this RUN_DIR/config.json: its settings, overridden by the "
                "flags given here; --out defaults to that RUN_DIR (add --resume to continue it)."
            ),
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Meta-train GWNMO (or a baseline) on few-shot tasks; writes checkpoints and TensorBoard events to --out."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.training import distributed
    from gwnmo_meta.training.trainer import TrainingDiverged, meta_train

    if test_tasks < 0:
        raise ConfigError(f"--test-tasks must be >= 0, got {test_tasks}")
    cfg = RunConfig(
        dataset=dataset.value,
        test_dataset=value(test_dataset),
        data_root=_path(data_root),
        download=download,
        skip_integrity_check=skip_integrity_check,
        backbone=backbone.value,
        train_classes=train_classes,
        val_classes=val_classes,
        test_classes=test_classes,
        keep_image_split=keep_image_split,
        ways=ways,
        shots=shots,
        query=query,
        method=method.value,
        schedule=value(schedule),
        weighting=weighting.value,
        weighting_hidden=weighting_hidden,
        inner_steps=inner_steps,
        inner_lr=inner_lr,
        meta_lr=meta_lr,
        learn_init=learn_init,
        first_order=first_order,
        head_hidden=head_hidden,
        meta_batch=meta_batch,
        task_batch=task_batch,
        inner_batch=inner_batch,
        judge_queries=judge_queries,
        learn_lr=learn_lr.value,
        grad_through_norm=grad_through_norm,
        base=base.value,
        base_momentum=base_momentum,
        base_beta2=base_beta2,
        adapt=value(adapt),
        conv_bias=conv_bias,
        meta_steps=meta_steps,
        val_every=val_every,
        val_tasks=val_tasks,
        device=device,
        seed=seed,
        data_seed=data_seed,
    )
    if config is not None:
        cfg = relaunch(ctx, config, cfg)
        out = out if given(ctx, "out") else config.parent
    progress = progress_bars(quiet)
    try:
        result = meta_train(
            cfg,
            out,
            resume=resume,
            progress=progress,
            check_test=test_tasks > 0,
            allow_data_change=allow_data_change,
        )
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
        raise typer.Exit(128 + result.signal)
    best = "n/a" if result.best_val_accuracy is None else f"{100 * result.best_val_accuracy:.2f}%"
    echo(f"meta-trained {result.steps_done} steps; best meta-val accuracy {best}; run dir {out}")
    if test_tasks:
        from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint
        from gwnmo_meta.io.atomic import atomic_write_json

        # under torchrun the test tasks are sharded over the ranks and gathered
        summary = evaluate_checkpoint(out / "best.pt", tasks=test_tasks, progress=progress)
        echo(
            f"meta-test ({summary['dataset']}, {summary['ways']}-way {summary['shots']}-shot): {summary['text']}"
        )
        if distributed.world().is_main:
            atomic_write_json(out / "test.json", summary)


@app.command()
@user_errors
def evaluate(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="A checkpoint written by meta-train (best.pt or last.pt); omit it with --method."
        ),
    ] = None,
    dataset: Annotated[
        Dataset | None,
        typer.Option(
            "--dataset",
            help=(
                "Evaluate on this dataset's meta-test tasks (default: "
                "the training dataset; another one = cross-dataset transfer)."
            ),
            rich_help_panel=DATA,
        ),
    ] = None,
    data_root: DataRoot = None,
    download: Download = False,
    skip_integrity_check: SkipCheck = False,
    tasks: Annotated[
        int, typer.Option("--tasks", help="Number of meta-test tasks.", rich_help_panel=TASK)
    ] = 600,
    ways: Annotated[
        int | None, typer.Option("--ways", help="N (default: as trained).", rich_help_panel=TASK)
    ] = None,
    shots: Annotated[
        int | None, typer.Option("--shots", help="K (default: as trained).", rich_help_panel=TASK)
    ] = None,
    query: Annotated[
        int | None, typer.Option("--query", help="Q (default: as trained).", rich_help_panel=TASK)
    ] = None,
    inner_steps: Annotated[
        int | None,
        typer.Option(
            "--inner-steps", help="Inner steps (default: as trained).", rich_help_panel=INNER
        ),
    ] = None,
    device: Device = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the meta-test task stream.")] = 1234,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the results as JSON here.", rich_help_panel=OUTPUT),
    ] = None,
    quiet: Quiet = False,
    method: Annotated[
        Method | None,
        typer.Option(
            "--method",
            help=(
                "Without a checkpoint: score a method with nothing to meta-learn (prototype, "
                "logreg, or sgd/adam/hg fine-tuning from a fixed random init) on the tasks and "
                "features meta-train would use with the same data flags and seeds."
            ),
            rich_help_panel=NO_CKPT,
        ),
    ] = None,
    backbone: panel(BackboneOpt, NO_CKPT) = "conv4",
    test_dataset: panel(TestDataset, NO_CKPT) = None,
    train_classes: panel(TrainClasses, NO_CKPT) = None,
    val_classes: panel(ValClasses, NO_CKPT) = None,
    test_classes: panel(TestClasses, NO_CKPT) = None,
    inner_lr: Annotated[
        float | None,
        typer.Option("--inner-lr", help="Inner step size of sgd/adam/hg.", rich_help_panel=NO_CKPT),
    ] = None,
    head_hidden: panel(HeadHidden, NO_CKPT) = None,
    hg_beta: Annotated[
        float,
        typer.Option("--hg-beta", help="HG's hypergradient step size.", rich_help_panel=NO_CKPT),
    ] = 1e-3,
    logreg_l2: Annotated[
        float,
        typer.Option("--logreg-l2", help="logreg's L2 penalty λ.", rich_help_panel=NO_CKPT),
    ] = 1e-3,
    run_seed: Annotated[
        int,
        typer.Option(
            "--run-seed",
            help="meta-train's --seed of the run to match (fixed init; data side by default).",
            rich_help_panel=NO_CKPT,
        ),
    ] = 0,
    data_seed: Annotated[
        int | None,
        typer.Option(
            "--data-seed",
            help="meta-train's --data-seed of the run to match (default: --run-seed).",
            rich_help_panel=NO_CKPT,
        ),
    ] = None,
) -> None:
    """Score a checkpoint (or, with --method, a method that needs none) on meta-test tasks."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint, evaluate_method
    from gwnmo_meta.io.atomic import atomic_write_json, check_writable_file

    if json_path is not None:
        check_writable_file(json_path, "--json")  # before the evaluation, not after it
        if checkpoint is not None:
            from gwnmo_meta.training.trainer import check_not_run_file

            check_not_run_file(json_path, checkpoint, "--json")
    if checkpoint is not None and method is not None:
        raise ConfigError("give a checkpoint or --method, not both")
    if checkpoint is None and method is None:
        raise ConfigError("give a checkpoint to evaluate, or --method prototype (or logreg)")
    if checkpoint is not None:
        summary = evaluate_checkpoint(
            checkpoint,
            dataset=value(dataset),
            data_root=_path(data_root),
            download=download,
            skip_integrity_check=skip_integrity_check,
            tasks=tasks,
            ways=ways,
            shots=shots,
            query=query,
            inner_steps=inner_steps,
            device=device,
            seed=seed,
            progress=progress_bars(quiet),
        )
    else:
        default = RunConfig()
        cfg = RunConfig(
            dataset=value(dataset) or default.dataset,
            test_dataset=value(test_dataset),
            data_root=_path(data_root),
            download=download,
            skip_integrity_check=skip_integrity_check,
            backbone=value(backbone),
            train_classes=train_classes,
            val_classes=val_classes,
            test_classes=test_classes,
            ways=default.ways if ways is None else ways,
            shots=default.shots if shots is None else shots,
            query=default.query if query is None else query,
            method=value(method),
            inner_steps=default.inner_steps if inner_steps is None else inner_steps,
            inner_lr=inner_lr,
            learn_init=False,
            head_hidden=head_hidden,
            hg_beta=hg_beta,
            logreg_l2=logreg_l2,
            device=device,
            seed=run_seed,
            data_seed=data_seed,
        )
        summary = evaluate_method(cfg, tasks=tasks, seed=seed, progress=progress_bars(quiet))
    from gwnmo_meta.training import distributed

    if not distributed.world().is_main:  # under torchrun, rank 0 reports
        return
    held_out = f" (meta-test: {summary['test_dataset']})" if summary["test_dataset"] else ""
    typer.echo(
        f"{summary['dataset']}{held_out} {summary['ways']}-way {summary['shots']}-shot, "
        f"{summary['method']}: {summary['text']}"
    )
    if json_path is not None:
        atomic_write_json(json_path, summary)


@app.command()
@user_errors
def splits(
    dataset: TaskDatasetOpt = "mnist",
    test_dataset: TestDataset = None,
    data_root: DataRoot = None,
    download: Download = False,
    skip_integrity_check: SkipCheck = False,
    train_classes: TrainClasses = None,
    val_classes: ValClasses = None,
    test_classes: TestClasses = None,
    keep_image_split: KeepImageSplit = False,
    ways: Annotated[
        int,
        typer.Option(
            "--ways", help="N: classes per task (counts N-way class sets).", rich_help_panel=TASK
        ),
    ] = 5,
    seed: Seed = 0,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Write the parts as JSON to stdout.", rich_help_panel=OUTPUT),
    ] = False,
) -> None:
    """Show the class split meta-train would use: each part's classes, images and N-way class sets (labels only)."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.tasks.fewshot import split_summary
    from gwnmo_meta.training.run_data import fewshot_config

    cfg = RunConfig(
        dataset=dataset.value,
        test_dataset=value(test_dataset),
        data_root=_path(data_root),
        download=download,
        skip_integrity_check=skip_integrity_check,
        train_classes=train_classes,
        val_classes=val_classes,
        test_classes=test_classes,
        keep_image_split=keep_image_split,
        ways=ways,
        seed=seed,
    ).validate()
    summary = split_summary(fewshot_config(cfg, progress=False), ways)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    held_out = f", meta-test: {summary['test_dataset']}" if summary["test_dataset"] else ""
    typer.echo(f"{summary['dataset']}{held_out}; {ways}-way class sets per part")
    for part, info in summary["parts"].items():
        note = (
            " (held-out images of the meta-train classes)"
            if part == "val" and summary["val_from_train_classes"]
            else ""
        )
        typer.echo(
            f"meta-{part}: {len(info['classes'])} classes, {info['images']} images, "
            f"{info['class_sets']} class sets{note}"
        )
        typer.echo("  " + " ".join(info["classes"]))


def _csv(text: str | None, cast: Callable[[str], Any] = str) -> tuple | None:
    from gwnmo_meta.errors import ConfigError

    if text is None:
        return None
    try:
        items = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"cannot parse list {text!r}") from None
    if not items:
        raise ConfigError(f"empty list {text!r}")
    return items


@app.command()
@user_errors
def benchmark(
    suite: Annotated[
        str,
        typer.Argument(
            help=(
                "Suite: quick (minutes), main (datasets × shots × all methods), transfer (3×3 "
                "cross-dataset), protocol (class-disjoint sources, tuned grids, seeds, paired CIs)."
            ),
        ),
    ] = "quick",
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            parser=out_folder,
            metavar="<path>",
            help="Folder for cells, results.{md,csv,json} and PNG plots.",
            rich_help_panel=OUTPUT,
        ),
    ] = Path("benchmarks/results"),
    datasets: Annotated[
        str | None,
        typer.Option(
            "--datasets",
            help="Comma list overriding the suite's datasets, e.g. mnist,fmnist.",
            rich_help_panel=DATA,
        ),
    ] = None,
    shots: Annotated[
        str | None,
        typer.Option(
            "--shots",
            help="Comma list overriding the suite's shots, e.g. 1,5.",
            rich_help_panel=TASK,
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help=f"Comma list overriding the suite's methods ({', '.join(registry.METHODS)}).",
            rich_help_panel=METHOD,
        ),
    ] = None,
    schedules: Annotated[
        str | None,
        typer.Option(
            "--schedules",
            help=f"Comma list of GWNMO schedules ({', '.join(registry.SCHEDULES)}).",
            rich_help_panel=METHOD,
        ),
    ] = None,
    meta_steps: Annotated[
        int | None,
        typer.Option(
            "--meta-steps", help="Meta-steps per cell (default: the suite's).", rich_help_panel=META
        ),
    ] = None,
    test_tasks: Annotated[
        int | None,
        typer.Option(
            "--test-tasks",
            help="Meta-test tasks per evaluation (default: the suite's).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    lr_values: Annotated[
        int | None,
        typer.Option(
            "--lr-values",
            help="Inner step sizes tried per method, 1-3 (equal tuning budget); protocol: grid "
            "points per hyperparameter before edge extensions (default 3; 1 = no tuning).",
            rich_help_panel=INNER,
        ),
    ] = None,
    data_root: DataRoot = None,
    skip_integrity_check: SkipCheck = False,
    backbone: BackboneOpt = "conv4",
    head_hidden: HeadHidden = None,
    weighting: WeightingOpt = defaults.WEIGHTING,
    weighting_hidden: WeightingHidden = int(defaults.WEIGHTING_HIDDEN.value),
    task_batch: TaskBatch = True,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            help="Run this many cells at once in worker processes (same results as one at a time).",
        ),
    ] = 1,
    adapt: AdaptOpt = "head",
    conv_bias: ConvBias = False,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    sources: Annotated[
        str | None,
        typer.Option(
            "--sources",
            help="Comma list of DATASET or DATASET:TEST_DATASET (default: mixed and each "
            "leave-one-dataset-out source).",
            rich_help_panel=PROTOCOL,
        ),
    ] = None,
    regimes: Annotated[
        str | None,
        typer.Option("--regimes", help="learned,fixed (init regimes).", rich_help_panel=PROTOCOL),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Seeds of the selected rows (default 0,1,2; tuning on the first).",
            rich_help_panel=PROTOCOL,
        ),
    ] = None,
    seed_sources: Annotated[
        str | None,
        typer.Option(
            "--seed-sources",
            help="Sources whose rows run on every seed (default: all; others: the first seed).",
            rich_help_panel=PROTOCOL,
        ),
    ] = None,
    variants: Annotated[
        str | None,
        typer.Option(
            "--variants",
            help="Extra rows 'NAME=METHOD:FIELD=VALUE,...;...' (RunConfig fields).",
            rich_help_panel=PROTOCOL,
        ),
    ] = None,
    inner_steps: Annotated[
        int | None,
        typer.Option(
            "--inner-steps",
            help="Inner steps of every method (default 5).",
            rich_help_panel=PROTOCOL,
        ),
    ] = None,
    val_tasks: Annotated[
        int | None,
        typer.Option(
            "--val-tasks",
            help="Meta-val tasks per validation (default 100).",
            rich_help_panel=PROTOCOL,
        ),
    ] = None,
) -> None:
    """Run a benchmark suite on shared tasks and seeds; resumable (finished cells are not re-run)."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.suites.grid import build_suite, run_suite

    if suite == "protocol":
        misplaced = {
            "--datasets (use --sources)": datasets is not None,
            "--seed (use --seeds)": seed != 0,
            "--jobs (cells run one at a time)": jobs != 1,
        }
        given = [flag for flag, v in misplaced.items() if v]
        if given:
            raise ConfigError(f"not options of the protocol suite: {'; '.join(given)}")
        _protocol(
            out=out,
            progress=progress_bars(quiet),
            sources=sources,
            shots=shots,
            regimes=regimes,
            methods=methods,
            schedules=schedules,
            variants=variants,
            seeds=seeds,
            seed_sources=seed_sources,
            test_tasks=test_tasks,
            grid_points=lr_values,
            base=dict(
                data_root=_path(data_root),
                skip_integrity_check=skip_integrity_check,
                backbone=value(backbone),
                device=device,
                head_hidden=head_hidden,
                weighting=value(weighting),
                weighting_hidden=weighting_hidden,
                task_batch=task_batch,
                meta_steps=meta_steps,
                inner_steps=inner_steps,
                val_tasks=val_tasks,
                adapt=value(adapt),
                conv_bias=conv_bias,
            ),
        )
        return
    protocol_only = {
        "--sources": sources,
        "--regimes": regimes,
        "--seeds": seeds,
        "--seed-sources": seed_sources,
        "--variants": variants,
        "--inner-steps": inner_steps,
        "--val-tasks": val_tasks,
    }
    given = [flag for flag, v in protocol_only.items() if v is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} apply only to the protocol suite")
    base = RunConfig(
        data_root=_path(data_root),
        skip_integrity_check=skip_integrity_check,
        backbone=backbone.value,
        device=device,
        seed=seed,
        head_hidden=head_hidden,
        weighting=weighting.value,
        weighting_hidden=weighting_hidden,
        task_batch=task_batch,
        adapt=value(adapt),
        conv_bias=conv_bias,
    )
    spec = build_suite(
        suite,
        datasets=_csv(datasets),
        shots=_csv(shots, int),
        methods=_csv(methods),
        schedules=_csv(schedules),
        meta_steps=meta_steps,
        test_tasks=test_tasks,
        lr_values=lr_values,
        base=base,
    )
    rows, paths = run_suite(spec, out, progress=progress_bars(quiet), jobs=jobs)
    for r in rows:
        typer.echo(
            f"{r['train_dataset']}->{r['test_dataset']} {r['shots']}-shot {r['variant']:<18} "
            f"{100 * r['accuracy_mean']:6.2f}% ± {100 * r['accuracy_ci95']:.2f}"
        )
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


def _protocol(*, out: Path, base: dict[str, Any], progress: bool, **lists: Any) -> None:
    """``benchmark protocol``: build the suite from the CLI's strings, run it, print the tables."""
    import dataclasses

    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.suites.protocol import build_protocol, parse_variants, run_protocol

    given = {k: v for k, v in base.items() if v is not None}
    cfg = dataclasses.replace(RunConfig(meta_steps=100, val_every=50, val_tasks=100), **given)
    cfg.val_every = max(1, cfg.meta_steps // 2)
    spec = build_protocol(
        base=cfg,
        sources=_csv(lists["sources"]),
        shots=_csv(lists["shots"], int),
        regimes=_csv(lists["regimes"]),
        methods=_csv(lists["methods"]),
        schedules=_csv(lists["schedules"]),
        extra_variants=parse_variants(lists["variants"] or ""),
        seeds=_csv(lists["seeds"], int),
        seed_sources=_csv(lists["seed_sources"]),
        test_tasks=lists["test_tasks"],
        grid_points=lists["grid_points"],
    )
    _, paths = run_protocol(spec, out, progress=progress, log=typer.echo)
    typer.echo((out / "results.md").read_text())
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@app.command()
@user_errors
def train(
    dataset: Annotated[
        SourceDataset,
        typer.Option(
            "--dataset",
            help="Dataset whose full train split trains the target.",
            rich_help_panel=DATA,
        ),
    ] = "mnist",
    data_root: DataRoot = None,
    download: Download = False,
    skip_integrity_check: SkipCheck = False,
    backbone: BackboneOpt = "conv4",
    optimizer: Annotated[
        ClassicOptimizer,
        typer.Option("--optimizer", help="Optimizer of the target.", rich_help_panel=METHOD),
    ] = registry.DEFAULT_METHOD,
    schedule: Annotated[
        ClassicSchedule | None,
        typer.Option(
            "--schedule",
            help="How M learns online: alg1 or alg2 (default alg1; gwnmo/gwnmo-prime only).",
            rich_help_panel=METHOD,
        ),
    ] = None,
    weighting: Annotated[
        Weighting,
        typer.Option(
            "--weighting",
            help="Weighting network M (the thesis uses mlp).",
            rich_help_panel=METHOD,
        ),
    ] = "mlp",
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Step size α of the target (default: "
            + defaults.describe_per_method(defaults.CLASSIC_LR)
            + "; gwnmo over --base "
            + ", ".join(f"{b} {t.value:g}" for b, t in defaults.CLASSIC_BASE_LR.items())
            + ", the same scan's).",
            rich_help_panel=METHOD,
        ),
    ] = None,
    meta_lr: Annotated[
        float,
        typer.Option(
            "--meta-lr",
            help="Step size β of Adam on M; " + defaults.CLASSIC_META_LR.describe("β"),
            rich_help_panel=METHOD,
        ),
    ] = defaults.CLASSIC_META_LR.value,
    hg_beta: Annotated[
        float,
        typer.Option(
            "--hg-beta",
            help="HG's hypergradient step size; " + defaults.CLASSIC_HG_BETA.describe("β_HG"),
            rich_help_panel=METHOD,
        ),
    ] = defaults.CLASSIC_HG_BETA.value,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs over the train split.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Mini-batch size.")] = 64,
    hidden: Annotated[
        int,
        typer.Option("--hidden", help="Width of the target's hidden layer (two linear layers)."),
    ] = 64,
    reps: Annotated[
        int,
        typer.Option(
            "--reps", help="Train this many fresh targets in sequence; M persists across them."
        ),
    ] = 1,
    weighting_from: Annotated[
        Path | None,
        typer.Option(
            "--weighting-from",
            help="Start M from a meta-train (or classic) checkpoint.",
            rich_help_panel=METHOD,
        ),
    ] = None,
    freeze_weighting: Annotated[
        bool,
        typer.Option(
            "--freeze-weighting",
            help="Keep M fixed (needs --weighting-from).",
            rich_help_panel=METHOD,
        ),
    ] = False,
    max_train_images: Annotated[
        int | None,
        typer.Option(
            "--max-train-images",
            help="Use only the first N train images (quick runs).",
            rich_help_panel=DATA,
        ),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            help="Share of each class's train images held out (seeded by --seed) to select the "
            "epoch whose test accuracy is reported; 0: no validation split (thesis practice only).",
            rich_help_panel=DATA,
        ),
    ] = defaults.CLASSIC_VAL_FRACTION,
    base: BaseOpt = "grad",
    base_momentum: BaseMomentum = defaults.BASE_MOMENTUM.value,
    base_beta2: BaseBeta2 = defaults.BASE_BETA2.value,
    device: Device = "auto",
    seed: Seed = 0,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            parser=out_folder,
            metavar="<path>",
            help="Folder for TensorBoard events, results.json, M's weights and last.pt.",
            rich_help_panel=OUTPUT,
        ),
    ] = Path("runs/train"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out from its last.pt (written at every epoch).",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    allow_data_change: Annotated[
        bool,
        typer.Option(
            "--allow-data-change",
            help="With --resume: continue even if the data differ from those the run was trained on.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Classic training (thesis Tables 1-2): train a target on a full dataset with GWNMO learning online."""
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.training.classic import ClassicConfig, train_classic

    if schedule is not None and not registry.METHODS[optimizer.value].learned_optimizer:
        learned = " and ".join(registry.METHODS.names(lambda m: m.learned_optimizer))
        raise ConfigError(
            f"--schedule applies to {learned} only, not to --optimizer {optimizer.value}"
        )
    cfg = ClassicConfig(
        dataset=dataset.value,
        data_root=_path(data_root),
        download=download,
        skip_integrity_check=skip_integrity_check,
        backbone=backbone.value,
        optimizer=optimizer.value,
        schedule=value(schedule) or "alg1",
        weighting=weighting.value,
        lr=lr,
        meta_lr=meta_lr,
        hg_beta=hg_beta,
        epochs=epochs,
        batch_size=batch_size,
        hidden=hidden,
        reps=reps,
        weighting_from=_path(weighting_from),
        freeze_weighting=freeze_weighting,
        max_train_images=max_train_images,
        device=device,
        seed=seed,
        val_fraction=val_fraction,
        base=base.value,
        base_momentum=base_momentum,
        base_beta2=base_beta2,
    )
    try:
        results = train_classic(
            cfg,
            out,
            progress=progress_bars(quiet),
            resume=resume,
            allow_data_change=allow_data_change,
        )
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: last.pt holds the current epoch's start
        from gwnmo_meta.io.interrupts import exit_code

        if not (out / "last.pt").is_file():
            raise
        typer.echo(f"interrupted; checkpoint saved to {out / 'last.pt'} (continue with --resume)")
        raise typer.Exit(exit_code(exc)) from None
    for r in results:
        typer.echo(f"rep {r.rep + 1}: {r.summary()}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
