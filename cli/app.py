"""Typer application behind the ``gwnmo-meta`` console script.

Heavy imports (torch, learn2learn) happen inside the commands so ``--help`` starts fast.
User mistakes (``GwnmoError``) print one ``error:`` line and exit with code 2.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    name="gwnmo-meta",
    help="GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Dataset(str, Enum):
    mnist = "mnist"
    fmnist = "fmnist"
    cifar10 = "cifar10"


class Method(str, Enum):
    gwnmo = "gwnmo"
    gwnmo_prime = "gwnmo-prime"
    maml = "maml"
    meta_sgd = "meta-sgd"
    hg = "hg"
    sgd = "sgd"
    adam = "adam"


class Schedule(str, Enum):
    alg1 = "alg1"
    alg2 = "alg2"


class Weighting(str, Enum):
    mlp = "mlp"
    coordinate = "coordinate"


class Backbone(str, Enum):
    conv4 = "conv4"
    resnet18_imagenet = "resnet18-imagenet"
    none = "none"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn gwnmo-meta's user errors into one line + exit 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gwnmo_meta.errors import GwnmoError

        try:
            return fn(*args, **kwargs)
        except GwnmoError as exc:
            fail(str(exc), 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


# ---- shared options -------------------------------------------------------------------------
DATA_ROOT = typer.Option(
    None,
    "--data-root",
    help="Folder with the datasets (default: $GWNMO_DATA, else ~/.cache/gwnmo-meta/data).",
)
DOWNLOAD = typer.Option(
    False, "--download/--no-download", help="Let torchvision download missing datasets."
)
SKIP_CHECK = typer.Option(
    False,
    "--skip-integrity-check",
    help="Accept a re-packed CIFAR-10 copy whose md5 sums differ from the originals.",
)
DEVICE = typer.Option(Device.auto, "--device", help="auto (CUDA if present), cpu or cuda.")
SEED = typer.Option(0, "--seed", help="Seed for tasks, initialisations and meta-training.")
TASK_BATCH_HELP = (
    "Adapt each meta-batch's tasks together in one task-batched inner loop (default): the same "
    "per-task maths in fewer, larger tensor ops, ~2.5x faster GWNMO meta-steps on CPU (BENCHMARKS.md "
    "section 4), evaluation batched too. --no-task-batch adapts one task at a time, as the committed "
    "benchmark results were computed (less memory). MAML/Meta-SGD always adapt one task at a time."
)


@app.callback()
def _root() -> None:
    """GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks."""


@app.command()
def version() -> None:
    """Print the gwnmo-meta version."""
    from gwnmo_meta import __version__

    typer.echo(__version__)


@app.command("meta-train")
@user_errors
def meta_train_cmd(
    dataset: Dataset = typer.Option(
        Dataset.mnist, "--dataset", help="Dataset the tasks are drawn from."
    ),
    data_root: Path | None = DATA_ROOT,
    download: bool = DOWNLOAD,
    skip_integrity_check: bool = SKIP_CHECK,
    backbone: Backbone = typer.Option(
        Backbone.conv4,
        "--backbone",
        help="Frozen feature extractor E (conv4 is pre-trained on the meta-train classes only).",
    ),
    train_classes: str | None = typer.Option(
        None, "--train-classes", help="Meta-train classes, e.g. 0-4 (default split: see README)."
    ),
    val_classes: str | None = typer.Option(
        None,
        "--val-classes",
        help="Class-disjoint meta-val classes (default: held-out images of the meta-train classes).",
    ),
    test_classes: str | None = typer.Option(
        None, "--test-classes", help="Meta-test classes, e.g. 5-9."
    ),
    keep_image_split: bool = typer.Option(
        False,
        "--keep-image-split",
        help="Use torchvision's train images for meta-train/val and its test images for meta-test.",
    ),
    ways: int = typer.Option(5, "--ways", help="N: classes per task."),
    shots: int = typer.Option(1, "--shots", help="K: support examples per class."),
    query: int = typer.Option(15, "--query", help="Q: query examples per class."),
    method: Method = typer.Option(Method.gwnmo, "--method", help="Learned optimizer or baseline."),
    schedule: Schedule | None = typer.Option(
        None,
        "--schedule",
        help=(
            "GWNMO meta-training schedule: alg1 (same-batch hypergradient) or "
            "alg2 (look-ahead on the query set). Default alg2; only for gwnmo/gwnmo-prime."
        ),
    ),
    weighting: Weighting = typer.Option(
        Weighting.coordinate,
        "--weighting",
        help="Weighting network M: thesis mlp or per-coordinate.",
    ),
    weighting_hidden: int = typer.Option(
        32, "--weighting-hidden", help="Hidden width of M (smaller: cheaper M on large targets)."
    ),
    inner_steps: int = typer.Option(
        5, "--inner-steps", help="Inner-loop steps on the support set."
    ),
    inner_lr: float | None = typer.Option(
        None, "--inner-lr", help="Inner step size α (default: the method's, see README)."
    ),
    meta_lr: float = typer.Option(
        1e-3, "--meta-lr", help="Meta step size β (Adam on θ and the learned init)."
    ),
    learn_init: bool = typer.Option(
        True,
        "--learn-init/--no-learn-init",
        help="Meta-learn the target head's initialisation too.",
    ),
    first_order: bool = typer.Option(
        False, "--first-order", help="First-order meta-gradients (no second derivatives)."
    ),
    head_hidden: int | None = typer.Option(
        None,
        "--head-hidden",
        help="Target head: two linear layers with this hidden width (default: one linear layer).",
    ),
    meta_batch: int = typer.Option(4, "--meta-batch", help="Tasks per meta-step."),
    task_batch: bool = typer.Option(True, "--task-batch/--no-task-batch", help=TASK_BATCH_HELP),
    meta_steps: int = typer.Option(1000, "--meta-steps", help="Meta-training steps."),
    val_every: int = typer.Option(
        100, "--val-every", help="Validate (and checkpoint) every this many meta-steps."
    ),
    val_tasks: int = typer.Option(200, "--val-tasks", help="Meta-val tasks per validation."),
    test_tasks: int = typer.Option(
        0,
        "--test-tasks",
        help="After training, evaluate best.pt on this many meta-test tasks (0: skip).",
    ),
    device: Device = DEVICE,
    seed: int = SEED,
    out: Path = typer.Option(
        Path("runs/meta-train"),
        "--out",
        help="RUN_DIR for checkpoints, config and TensorBoard events.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last.pt."
    ),
) -> None:
    """Meta-train GWNMO (or a baseline) on few-shot tasks; writes checkpoints and TensorBoard events to --out."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.trainer import TrainingDiverged, meta_train

    if schedule is not None and method not in (Method.gwnmo, Method.gwnmo_prime):
        raise ConfigError(
            f"--schedule applies to gwnmo and gwnmo-prime only, not to --method {method.value}"
        )
    if test_tasks < 0:
        raise ConfigError(f"--test-tasks must be >= 0, got {test_tasks}")
    cfg = RunConfig(
        dataset=dataset.value,
        data_root=None if data_root is None else str(data_root),
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
        schedule=(schedule or Schedule.alg2).value,
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
        meta_steps=meta_steps,
        val_every=val_every,
        val_tasks=val_tasks,
        device=device.value,
        seed=seed,
    )
    try:
        result = meta_train(cfg, out, resume=resume)
    except TrainingDiverged as exc:
        fail(str(exc), 1)
    if result.interrupted:
        typer.echo(
            f"interrupted at meta-step {result.steps_done}; "
            f"checkpoint saved to {out / 'last.pt'} (continue with --resume)"
        )
        raise typer.Exit(130)
    best = "n/a" if result.best_val_accuracy is None else f"{100 * result.best_val_accuracy:.2f}%"
    typer.echo(
        f"meta-trained {result.steps_done} steps; best meta-val accuracy {best}; run dir {out}"
    )
    if test_tasks:
        from gwnmo_meta.evaluate import evaluate_checkpoint

        summary = evaluate_checkpoint(out / "best.pt", tasks=test_tasks)
        typer.echo(
            f"meta-test ({summary['dataset']}, {summary['ways']}-way {summary['shots']}-shot): {summary['text']}"
        )
        (out / "test.json").write_text(json.dumps(summary, indent=2) + "\n")


@app.command()
@user_errors
def evaluate(
    checkpoint: Path = typer.Argument(
        ..., help="A checkpoint written by meta-train (best.pt or last.pt)."
    ),
    dataset: Dataset | None = typer.Option(
        None,
        "--dataset",
        help=(
            "Evaluate on this dataset's meta-test tasks (default: "
            "the training dataset; another one = cross-dataset transfer)."
        ),
    ),
    data_root: Path | None = DATA_ROOT,
    download: bool = DOWNLOAD,
    skip_integrity_check: bool = SKIP_CHECK,
    tasks: int = typer.Option(600, "--tasks", help="Number of meta-test tasks."),
    ways: int | None = typer.Option(None, "--ways", help="N (default: as trained)."),
    shots: int | None = typer.Option(None, "--shots", help="K (default: as trained)."),
    query: int | None = typer.Option(None, "--query", help="Q (default: as trained)."),
    inner_steps: int | None = typer.Option(
        None, "--inner-steps", help="Inner steps (default: as trained)."
    ),
    device: Device = DEVICE,
    seed: int = typer.Option(1234, "--seed", help="Seed of the meta-test task stream."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Also write the results as JSON here."
    ),
) -> None:
    """Evaluate a checkpoint on meta-test tasks: accuracy mean ± 95% CI and query loss."""
    from gwnmo_meta.evaluate import evaluate_checkpoint

    summary = evaluate_checkpoint(
        checkpoint,
        dataset=None if dataset is None else dataset.value,
        data_root=None if data_root is None else str(data_root),
        download=download,
        skip_integrity_check=skip_integrity_check,
        tasks=tasks,
        ways=ways,
        shots=shots,
        query=query,
        inner_steps=inner_steps,
        device=device.value,
        seed=seed,
    )
    typer.echo(
        f"{summary['dataset']} {summary['ways']}-way {summary['shots']}-shot, {summary['method']}: {summary['text']}"
    )
    if json_path is not None:
        try:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            fail(f"cannot write --json {json_path}: {exc.strerror or exc}")


def _csv(value: str | None, cast: Callable[[str], Any] = str) -> tuple | None:
    from gwnmo_meta.errors import ConfigError

    if value is None:
        return None
    try:
        items = tuple(cast(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"cannot parse list {value!r}") from None
    if not items:
        raise ConfigError(f"empty list {value!r}")
    return items


@app.command()
@user_errors
def benchmark(
    suite: str = typer.Argument(
        "quick",
        help="Suite: quick (minutes), main (datasets × shots × all methods), transfer (3×3 cross-dataset).",
    ),
    out: Path = typer.Option(
        Path("benchmarks/results"),
        "--out",
        help="Folder for cells, results.{md,csv,json} and PNG plots.",
    ),
    datasets: str | None = typer.Option(
        None, "--datasets", help="Comma list overriding the suite's datasets, e.g. mnist,fmnist."
    ),
    shots: str | None = typer.Option(
        None, "--shots", help="Comma list overriding the suite's shots, e.g. 1,5."
    ),
    methods: str | None = typer.Option(
        None, "--methods", help="Comma list overriding the suite's methods."
    ),
    schedules: str | None = typer.Option(
        None, "--schedules", help="Comma list of GWNMO schedules (alg1,alg2)."
    ),
    meta_steps: int | None = typer.Option(
        None, "--meta-steps", help="Meta-steps per cell (default: the suite's)."
    ),
    test_tasks: int | None = typer.Option(
        None, "--test-tasks", help="Meta-test tasks per evaluation (default: the suite's)."
    ),
    lr_values: int | None = typer.Option(
        None, "--lr-values", help="Inner step sizes tried per method, 1-3 (equal tuning budget)."
    ),
    data_root: Path | None = DATA_ROOT,
    skip_integrity_check: bool = SKIP_CHECK,
    backbone: Backbone = typer.Option(
        Backbone.conv4, "--backbone", help="Frozen feature extractor shared by all cells."
    ),
    head_hidden: int | None = typer.Option(
        None,
        "--head-hidden",
        help="Two-layer target head with this hidden width (default: linear head).",
    ),
    weighting: Weighting = typer.Option(
        Weighting.coordinate, "--weighting", help="GWNMO's weighting network M in every GWNMO cell."
    ),
    weighting_hidden: int = typer.Option(
        32, "--weighting-hidden", help="Hidden width of M in every GWNMO cell."
    ),
    task_batch: bool = typer.Option(True, "--task-batch/--no-task-batch", help=TASK_BATCH_HELP),
    device: Device = DEVICE,
    seed: int = SEED,
) -> None:
    """Run a benchmark suite on shared tasks and seeds; resumable (finished cells are not re-run)."""
    from gwnmo_meta.benchmark import build_suite, run_suite
    from gwnmo_meta.config import RunConfig

    base = RunConfig(
        data_root=None if data_root is None else str(data_root),
        skip_integrity_check=skip_integrity_check,
        backbone=backbone.value,
        device=device.value,
        seed=seed,
        head_hidden=head_hidden,
        weighting=weighting.value,
        weighting_hidden=weighting_hidden,
        task_batch=task_batch,
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
    rows, paths = run_suite(spec, out)
    for r in rows:
        typer.echo(
            f"{r['train_dataset']}->{r['test_dataset']} {r['shots']}-shot {r['variant']:<18} "
            f"{100 * r['accuracy_mean']:6.2f}% ± {100 * r['accuracy_ci95']:.2f}"
        )
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


class ClassicOptimizer(str, Enum):
    gwnmo = "gwnmo"
    gwnmo_prime = "gwnmo-prime"
    adam = "adam"
    hg = "hg"
    sgd = "sgd"


@app.command()
@user_errors
def train(
    dataset: Dataset = typer.Option(
        Dataset.mnist, "--dataset", help="Dataset whose full train split trains the target."
    ),
    data_root: Path | None = DATA_ROOT,
    download: bool = DOWNLOAD,
    skip_integrity_check: bool = SKIP_CHECK,
    backbone: Backbone = typer.Option(
        Backbone.conv4, "--backbone", help="Frozen feature extractor E."
    ),
    optimizer: ClassicOptimizer = typer.Option(
        ClassicOptimizer.gwnmo, "--optimizer", help="Optimizer of the target."
    ),
    schedule: Schedule | None = typer.Option(
        None,
        "--schedule",
        help="How M learns online: alg1 or alg2 (default alg1; gwnmo/gwnmo-prime only).",
    ),
    weighting: Weighting = typer.Option(
        Weighting.mlp, "--weighting", help="Weighting network M (the thesis uses mlp)."
    ),
    lr: float | None = typer.Option(
        None,
        "--lr",
        help="Step size α of the target (default: gwnmo 0.1, adam 0.001, hg 0.1, sgd 0.1).",
    ),
    meta_lr: float = typer.Option(1e-3, "--meta-lr", help="Step size β of Adam on M."),
    hg_beta: float = typer.Option(1e-4, "--hg-beta", help="HG's hypergradient step size."),
    epochs: int = typer.Option(5, "--epochs", help="Epochs over the train split."),
    batch_size: int = typer.Option(64, "--batch-size", help="Mini-batch size."),
    hidden: int = typer.Option(
        64, "--hidden", help="Width of the target's hidden layer (two linear layers)."
    ),
    reps: int = typer.Option(
        1, "--reps", help="Train this many fresh targets in sequence; M persists across them."
    ),
    weighting_from: Path | None = typer.Option(
        None, "--weighting-from", help="Start M from a meta-train (or classic) checkpoint."
    ),
    freeze_weighting: bool = typer.Option(
        False, "--freeze-weighting", help="Keep M fixed (needs --weighting-from)."
    ),
    max_train_images: int | None = typer.Option(
        None, "--max-train-images", help="Use only the first N train images (quick runs)."
    ),
    device: Device = DEVICE,
    seed: int = SEED,
    out: Path = typer.Option(
        Path("runs/train"),
        "--out",
        help="Folder for TensorBoard events, results.json and M's weights.",
    ),
) -> None:
    """Classic training (thesis Tables 1-2): train a target on a full dataset with GWNMO learning online."""
    from gwnmo_meta.classic import ClassicConfig, train_classic
    from gwnmo_meta.errors import ConfigError

    if schedule is not None and optimizer not in (
        ClassicOptimizer.gwnmo,
        ClassicOptimizer.gwnmo_prime,
    ):
        raise ConfigError(
            f"--schedule applies to gwnmo and gwnmo-prime only, not to --optimizer {optimizer.value}"
        )
    cfg = ClassicConfig(
        dataset=dataset.value,
        data_root=None if data_root is None else str(data_root),
        download=download,
        skip_integrity_check=skip_integrity_check,
        backbone=backbone.value,
        optimizer=optimizer.value,
        schedule=(schedule or Schedule.alg1).value,
        weighting=weighting.value,
        lr=lr,
        meta_lr=meta_lr,
        hg_beta=hg_beta,
        epochs=epochs,
        batch_size=batch_size,
        hidden=hidden,
        reps=reps,
        weighting_from=None if weighting_from is None else str(weighting_from),
        freeze_weighting=freeze_weighting,
        max_train_images=max_train_images,
        device=device.value,
        seed=seed,
    )
    results = train_classic(cfg, out)
    for r in results:
        typer.echo(
            f"rep {r.rep + 1}: best test accuracy {100 * r.best_accuracy:.2f}%, best test loss {r.best_loss:.4f}; "
            f"final {100 * r.final.test_accuracy:.2f}% / {r.final.test_loss:.4f}"
        )
    summary = {
        "config": cfg.__dict__,
        "reps": [
            {
                "rep": r.rep + 1,
                "best_accuracy": r.best_accuracy,
                "best_loss": r.best_loss,
                "final_accuracy": r.final.test_accuracy,
                "final_loss": r.final.test_loss,
                "epochs": [e.__dict__ for e in r.epochs],
            }
            for r in results
        ],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
