"""``gwnmo-meta version`` and ``gwnmo-meta --version``."""

from __future__ import annotations

import typer

EXAMPLE = "gwnmo-meta version"


def print_version(flag: bool = True) -> None:
    """Print the version and exit (``--version``'s eager callback: only when ``flag`` is set)."""
    if flag:
        from gwnmo_meta import __version__

        typer.echo(__version__)
        raise typer.Exit()


def version() -> None:
    """Print the gwnmo-meta version."""
    print_version(True)
