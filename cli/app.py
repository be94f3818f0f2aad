"""Typer application behind the ``gwnmo-meta`` console script."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="gwnmo-meta",
    help="GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """GWNMO: a learned gradient-weighting optimizer, meta-trained on few-shot tasks."""


@app.command()
def version() -> None:
    """Print the gwnmo-meta version."""
    from gwnmo_meta import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
