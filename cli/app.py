"""Typer application behind the ``gwnmo-meta`` console script: the commands, wired together.

Each command lives in its own module (options shared by several commands: :mod:`.options`; the
error style and config building: :mod:`.common`). Heavy imports (torch, learn2learn) happen
inside the commands so ``--help`` starts fast. Progress bars are drawn only when stderr is a
terminal, and never with ``--quiet``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from gwnmo_meta.cli import benchmark, evaluate, meta_train, splits, train, version
from gwnmo_meta.cli.common import Command, OneLineErrors

EXAMPLE = "gwnmo-meta meta-train --download --meta-steps 300 --test-tasks 600 --out runs/mnist"

app = typer.Typer(
    name="gwnmo-meta",
    cls=OneLineErrors,
    help="GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=f"Example: {EXAMPLE}",
)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=version.print_version,
            help="Print the gwnmo-meta version and exit.",
        ),
    ] = False,
) -> None:
    """GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks."""


def _add(name: str, command: Callable[..., Any], example: str) -> None:
    app.command(name, cls=Command, epilog=f"Example: {example}")(command)


_add("meta-train", meta_train.meta_train, meta_train.EXAMPLE)
_add("evaluate", evaluate.evaluate, evaluate.EXAMPLE)
_add("splits", splits.splits, splits.EXAMPLE)
app.add_typer(benchmark.app)
_add("train", train.train, train.EXAMPLE)
_add("version", version.version, version.EXAMPLE)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
