"""``gwnmo-meta benchmark grid|protocol``: benchmark suites on shared tasks and seeds; resumable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gwnmo_meta.cli.common import (
    RUN,
    Command,
    config_from,
    csv_list,
    plain,
    progress_bars,
    user_errors,
)
from gwnmo_meta.cli.options import (
    AdaptOpt,
    Backbone,
    BackboneOpt,
    ConvBias,
    DataRoot,
    Device,
    HeadHidden,
    Quiet,
    Seed,
    SkipCheck,
    TaskBatch,
    Weighting,
    WeightingHidden,
    WeightingOpt,
    opt,
    out,
    panel,
)

if TYPE_CHECKING:
    from gwnmo_meta.config import RunConfig

GRID_EXAMPLE = "gwnmo-meta benchmark grid quick --data-root DIR --out runs/quick"
PROTOCOL_EXAMPLE = "gwnmo-meta benchmark protocol --sources mixed --shots 1 --out runs/protocol"
SUITE, CELLS = "Suite", "Every cell"

app = typer.Typer(
    name="benchmark",
    help="Run a benchmark suite on shared tasks and seeds; resumable.",
    no_args_is_help=True,
    epilog=f"Example: {GRID_EXAMPLE}",
)

# ---- options of both suites ---------------------------------------------------------------------
SuiteOut = Annotated[Path, out("Folder for cells, results and plots.")]
ShotsList = Annotated[
    str | None, opt("--shots", help="Comma list of shots, e.g. 1,5.", panel=SUITE)
]
MethodsList = Annotated[
    str | None, opt("--methods", help="Comma list of methods, e.g. gwnmo,maml.", panel=SUITE)
]
SchedulesList = Annotated[
    str | None, opt("--schedules", help="Comma list of GWNMO schedules.", panel=SUITE)
]
MetaSteps = Annotated[int | None, opt("--meta-steps", help="Meta-steps per cell.", panel=SUITE)]
TestTasks = Annotated[
    int | None, opt("--test-tasks", help="Meta-test tasks per evaluation.", panel=SUITE)
]
CellBackbone = Annotated[Backbone, panel(BackboneOpt, CELLS)]
CellHeadHidden = Annotated[int | None, panel(HeadHidden, CELLS)]
CellWeighting = Annotated[Weighting, panel(WeightingOpt, CELLS)]
CellWeightingHidden = Annotated[int, panel(WeightingHidden, CELLS)]

# ---- grid suites --------------------------------------------------------------------------------
Suite = Annotated[str, typer.Argument(help="quick (minutes), main or transfer (3×3 datasets).")]
Datasets = Annotated[
    str | None, opt("--datasets", help="Comma list of datasets, e.g. mnist,fmnist.", panel=SUITE)
]
GridLrValues = Annotated[
    int | None, opt("--lr-values", help="Step sizes tried per method, 1-3.", panel=SUITE)
]
Jobs = Annotated[int, opt("--jobs", help="Cells run at once in worker processes.")]

# ---- the protocol suite -------------------------------------------------------------------------
Sources = Annotated[
    str | None, opt("--sources", help="Comma list of DATASET or DATASET:TEST_DATASET.", panel=SUITE)
]
Regimes = Annotated[str | None, opt("--regimes", help="learned,fixed (init regimes).", panel=SUITE)]
Seeds = Annotated[
    str | None, opt("--seeds", help="Seeds (default 0,1,2; tuning on the first).", panel=SUITE)
]
SeedSources = Annotated[
    str | None, opt("--seed-sources", help="Sources run on every seed (default: all).", panel=SUITE)
]
Variants = Annotated[
    str | None, opt("--variants", help="Extra rows 'NAME=METHOD:FIELD=VALUE,...;...'.", panel=SUITE)
]
InnerSteps = Annotated[
    int | None, opt("--inner-steps", help="Inner steps of every method (default 5).", panel=SUITE)
]
ValTasks = Annotated[
    int | None, opt("--val-tasks", help="Meta-val tasks per validation (default 100).", panel=SUITE)
]
GridPoints = Annotated[
    int | None, opt("--lr-values", help="Grid points per hyperparameter (default 3).", panel=SUITE)
]

# the RunConfig fields each suite takes from its options
GRID_BASE: tuple[str, ...] = ("data_root", "skip_integrity_check", "backbone", "device", "seed")
GRID_BASE += ("head_hidden", "weighting", "weighting_hidden", "task_batch", "adapt", "conv_bias")
PROTOCOL_BASE = (*(n for n in GRID_BASE if n != "seed"), "meta_steps", "inner_steps", "val_tasks")


@app.command(cls=Command, epilog=f"Example: {GRID_EXAMPLE}")
@user_errors
def grid(
    ctx: typer.Context,
    suite: Suite = "quick",
    data_root: DataRoot = RUN.data_root,
    skip_integrity_check: SkipCheck = RUN.skip_integrity_check,
    datasets: Datasets = None,
    shots: ShotsList = None,
    methods: MethodsList = None,
    schedules: SchedulesList = None,
    lr_values: GridLrValues = None,
    meta_steps: MetaSteps = None,
    test_tasks: TestTasks = None,
    backbone: CellBackbone = RUN.backbone,
    head_hidden: CellHeadHidden = RUN.head_hidden,
    weighting: CellWeighting = RUN.weighting,
    weighting_hidden: CellWeightingHidden = RUN.weighting_hidden,
    adapt: AdaptOpt = RUN.adapt,
    conv_bias: ConvBias = RUN.conv_bias,
    task_batch: TaskBatch = RUN.task_batch,
    jobs: Jobs = 1,
    device: Device = RUN.device,
    seed: Seed = RUN.seed,
    out: SuiteOut = Path("benchmarks/results"),
    quiet: Quiet = False,
) -> None:
    """The grid suites: quick, main (datasets × shots × methods) and transfer."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.suites.grid import build_suite, run_suite

    spec = build_suite(
        suite,
        datasets=csv_list(datasets),
        shots=csv_list(shots, int),
        methods=csv_list(methods),
        schedules=csv_list(schedules),
        meta_steps=meta_steps,
        test_tasks=test_tasks,
        lr_values=lr_values,
        base=config_from(RunConfig, ctx.params, GRID_BASE),
    )
    rows, paths = run_suite(spec, out, progress=progress_bars(quiet), jobs=jobs)
    for r in rows:
        typer.echo(
            f"{r['train_dataset']}->{r['test_dataset']} {r['shots']}-shot {r['variant']:<18} "
            f"{100 * r['accuracy_mean']:6.2f}% ± {100 * r['accuracy_ci95']:.2f}"
        )
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@app.command(cls=Command, epilog=f"Example: {PROTOCOL_EXAMPLE}")
@user_errors
def protocol(
    ctx: typer.Context,
    data_root: DataRoot = RUN.data_root,
    skip_integrity_check: SkipCheck = RUN.skip_integrity_check,
    sources: Sources = None,
    shots: ShotsList = None,
    regimes: Regimes = None,
    methods: MethodsList = None,
    schedules: SchedulesList = None,
    variants: Variants = None,
    seeds: Seeds = None,
    seed_sources: SeedSources = None,
    lr_values: GridPoints = None,
    meta_steps: MetaSteps = None,
    test_tasks: TestTasks = None,
    backbone: CellBackbone = RUN.backbone,
    head_hidden: CellHeadHidden = RUN.head_hidden,
    weighting: CellWeighting = RUN.weighting,
    weighting_hidden: CellWeightingHidden = RUN.weighting_hidden,
    adapt: AdaptOpt = RUN.adapt,
    conv_bias: ConvBias = RUN.conv_bias,
    task_batch: TaskBatch = RUN.task_batch,
    inner_steps: InnerSteps = None,
    val_tasks: ValTasks = None,
    device: Device = RUN.device,
    out: SuiteOut = Path("benchmarks/results"),
    quiet: Quiet = False,
) -> None:
    """The protocol suite: class-disjoint sources, every method tuned alike, paired CIs."""
    from gwnmo_meta.suites.protocol import build_protocol, parse_variants, run_protocol

    spec = build_protocol(
        base=protocol_base(ctx.params),
        sources=csv_list(sources),
        shots=csv_list(shots, int),
        regimes=csv_list(regimes),
        methods=csv_list(methods),
        schedules=csv_list(schedules),
        extra_variants=parse_variants(variants or ""),
        seeds=csv_list(seeds, int),
        seed_sources=csv_list(seed_sources),
        test_tasks=test_tasks,
        grid_points=lr_values,
    )
    _, paths = run_protocol(spec, out, progress=progress_bars(quiet), log=typer.echo)
    typer.echo((out / "results.md").read_text())
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


def protocol_base(params: dict[str, Any]) -> RunConfig:
    """The protocol's shared RunConfig: the suite's defaults, overridden by the options given."""
    from gwnmo_meta.suites.protocol import protocol_base as suite_base

    return suite_base(**{n: plain(params[n]) for n in PROTOCOL_BASE if params[n] is not None})
