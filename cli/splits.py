"""``gwnmo-meta splits``: the class split meta-train would use, from the labels alone."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from gwnmo_meta.cli.common import RUN, config_from, user_errors
from gwnmo_meta.cli.options import (
    OUTPUT,
    TASK,
    DataRoot,
    Download,
    KeepImageSplit,
    Seed,
    SkipCheck,
    TaskDatasetOpt,
    TestClasses,
    TestDataset,
    TrainClasses,
    ValClasses,
    opt,
)

EXAMPLE = "gwnmo-meta splits --dataset mixed --test-dataset cifar10 --ways 5"

SplitWays = Annotated[int, opt("--ways", help="N: counts N-way class sets.", panel=TASK)]
AsJson = Annotated[bool, opt("--json", help="Write the parts as JSON to stdout.", panel=OUTPUT)]


@user_errors
def splits(
    ctx: typer.Context,
    data_root: DataRoot = RUN.data_root,
    download: Download = RUN.download,
    skip_integrity_check: SkipCheck = RUN.skip_integrity_check,
    dataset: TaskDatasetOpt = RUN.dataset,
    test_dataset: TestDataset = RUN.test_dataset,
    train_classes: TrainClasses = RUN.train_classes,
    val_classes: ValClasses = RUN.val_classes,
    test_classes: TestClasses = RUN.test_classes,
    keep_image_split: KeepImageSplit = RUN.keep_image_split,
    ways: SplitWays = RUN.ways,
    seed: Seed = RUN.seed,
    as_json: AsJson = False,
) -> None:
    """Show the class split meta-train would use: classes, images and class sets per part."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.tasks.fewshot import split_summary
    from gwnmo_meta.training.run_data import fewshot_config

    cfg = config_from(RunConfig, ctx.params).validate()
    summary = split_summary(fewshot_config(cfg, progress=False), ways)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary, ways)


def print_summary(summary: dict[str, Any], ways: int) -> None:
    """The split as text: one header line, then each part's counts and classes."""
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
