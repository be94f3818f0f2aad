"""``gwnmo-meta evaluate``: score a checkpoint (or a method with nothing to meta-learn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gwnmo_meta.cli.common import RUN, config_from, plain, progress_bars, user_errors
from gwnmo_meta.cli.options import (
    OUTPUT,
    TASK,
    Backbone,
    BackboneOpt,
    DataRoot,
    Dataset,
    Device,
    Download,
    HeadHidden,
    Method,
    Quiet,
    SkipCheck,
    SourceDataset,
    TestClasses,
    TestDataset,
    TrainClasses,
    ValClasses,
    listing,
    opt,
    panel,
)

NO_CKPT = "Without a checkpoint (--method)"
EXAMPLE = "gwnmo-meta evaluate runs/mnist/best.pt --dataset fmnist --tasks 600 --json fmnist.json"

Checkpoint = Annotated[
    Path | None,
    typer.Argument(help="A checkpoint written by meta-train (best.pt or last.pt); or --method."),
]
EvalDataset = Annotated[
    Dataset | None,
    opt("--dataset", help=f"{listing(Dataset)} (default: as trained).", panel=TASK, metavar="NAME"),
]
Tasks = Annotated[int, opt("--tasks", help="Number of meta-test tasks.", panel=TASK)]
EvalWays = Annotated[int | None, opt("--ways", help="N (default: as trained).", panel=TASK)]
EvalShots = Annotated[int | None, opt("--shots", help="K (default: as trained).", panel=TASK)]
EvalQuery = Annotated[int | None, opt("--query", help="Q (default: as trained).", panel=TASK)]
EvalInnerSteps = Annotated[
    int | None, opt("--inner-steps", help="Inner steps (default: as trained).", panel=TASK)
]
EvalSeed = Annotated[int, opt("--seed", help="Seed of the meta-test task stream.")]
JsonPath = Annotated[
    Path | None, opt("--json", help="Also write the results as JSON here.", panel=OUTPUT)
]
MethodOpt = Annotated[
    Method | None,
    opt(
        "--method",
        help="prototype, logreg, or sgd/adam/hg from a fixed init.",
        panel=NO_CKPT,
        metavar="NAME",
    ),
]
InnerLr = Annotated[
    float | None, opt("--inner-lr", help="Inner step size of sgd/adam/hg.", panel=NO_CKPT)
]
HgBeta = Annotated[float, opt("--hg-beta", help="HG's hypergradient step size.", panel=NO_CKPT)]
LogregL2 = Annotated[float, opt("--logreg-l2", help="logreg's L2 penalty λ.", panel=NO_CKPT)]
RunSeed = Annotated[
    int, opt("--run-seed", help="meta-train's --seed of the run to match.", panel=NO_CKPT)
]
DataSeed = Annotated[
    int | None,
    opt("--data-seed", help="meta-train's --data-seed (default: --run-seed).", panel=NO_CKPT),
]

MethodBackbone = Annotated[Backbone, panel(BackboneOpt, NO_CKPT)]
MethodTestDataset = Annotated[SourceDataset | None, panel(TestDataset, NO_CKPT)]
MethodTrainClasses = Annotated[str | None, panel(TrainClasses, NO_CKPT)]
MethodValClasses = Annotated[str | None, panel(ValClasses, NO_CKPT)]
MethodTestClasses = Annotated[str | None, panel(TestClasses, NO_CKPT)]
MethodHeadHidden = Annotated[int | None, panel(HeadHidden, NO_CKPT)]


@user_errors
def evaluate(
    ctx: typer.Context,
    checkpoint: Checkpoint = None,
    data_root: DataRoot = RUN.data_root,
    download: Download = RUN.download,
    skip_integrity_check: SkipCheck = RUN.skip_integrity_check,
    dataset: EvalDataset = None,
    tasks: Tasks = 600,
    ways: EvalWays = None,
    shots: EvalShots = None,
    query: EvalQuery = None,
    inner_steps: EvalInnerSteps = None,
    device: Device = RUN.device,
    seed: EvalSeed = 1234,
    json_path: JsonPath = None,
    quiet: Quiet = False,
    method: MethodOpt = None,
    backbone: MethodBackbone = RUN.backbone,
    test_dataset: MethodTestDataset = RUN.test_dataset,
    train_classes: MethodTrainClasses = RUN.train_classes,
    val_classes: MethodValClasses = RUN.val_classes,
    test_classes: MethodTestClasses = RUN.test_classes,
    inner_lr: InnerLr = RUN.inner_lr,
    head_hidden: MethodHeadHidden = RUN.head_hidden,
    hg_beta: HgBeta = RUN.hg_beta,
    logreg_l2: LogregL2 = RUN.logreg_l2,
    run_seed: RunSeed = RUN.seed,
    data_seed: DataSeed = RUN.data_seed,
) -> None:
    """Score a checkpoint (or, with --method, a method that needs none) on meta-test tasks."""
    check_arguments(checkpoint, method, json_path)
    if checkpoint is not None:
        summary = score_checkpoint(checkpoint, ctx.params)
    else:
        from gwnmo_meta.config import RunConfig
        from gwnmo_meta.evaluation.evaluate import evaluate_method

        # the run meta-train would make with these flags: its seed is --run-seed, its init fixed
        cfg = config_from(RunConfig, ctx.params, seed=run_seed, learn_init=False)
        summary = evaluate_method(cfg, tasks=tasks, seed=seed, progress=progress_bars(quiet))
    report(summary, json_path)


def check_arguments(checkpoint: Path | None, method: Any, json_path: Path | None) -> None:
    """A checkpoint or ``--method`` (one of them), and a writable ``--json``, before any work."""
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.io.atomic import check_writable_file

    if json_path is not None:
        check_writable_file(json_path, "--json")  # before the evaluation, not after it
        if checkpoint is not None:
            from gwnmo_meta.training.trainer import check_not_run_file

            check_not_run_file(json_path, checkpoint, "--json")
    if checkpoint is not None and method is not None:
        raise ConfigError("give a checkpoint or --method, not both")
    if checkpoint is None and method is None:
        raise ConfigError("give a checkpoint to evaluate, or --method prototype (or logreg)")


def score_checkpoint(checkpoint: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``evaluate_checkpoint`` with the command's options (those left unset: as trained)."""
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint

    names = ["dataset", "data_root", "download", "skip_integrity_check", "tasks", "ways", "shots"]
    names += ["query", "inner_steps", "device", "seed"]
    options = {k: plain(params[k]) for k in names}
    return evaluate_checkpoint(checkpoint, **options, progress=progress_bars(params["quiet"]))


def report(summary: dict[str, Any], json_path: Path | None) -> None:
    """Print the summary (rank 0 under torchrun) and write it to ``json_path``."""
    from gwnmo_meta.io.atomic import atomic_write_json
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
