"""Every command's ``--help`` fits in about a screen and ends with an example that parses."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from gwnmo_meta import defaults
from gwnmo_meta.cli.app import app
from gwnmo_meta.registry import METHODS, Tuned

SCREEN = 60  # lines at 100 columns
LIMIT = {"meta-train": 70}  # 46 options, each on one line, in six panels
CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"


def _commands(group: typer.core.TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """Every command path, groups included (``()`` is ``gwnmo-meta`` itself)."""
    yield path
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_measured():
    assert {" ".join(p) for p in COMMANDS} >= {"", "meta-train", "evaluate", "splits", "train"}
    assert {"benchmark grid", "benchmark protocol", "version"} <= {" ".join(p) for p in COMMANDS}


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "gwnmo-meta")
def test_help_fits_a_screen_and_ends_with_an_example(path):
    res = CliRunner(env={"COLUMNS": "100"}).invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.rstrip().splitlines()
    assert len(lines) <= LIMIT.get(" ".join(path), SCREEN), res.stdout
    assert max(len(line) for line in lines) <= 100
    last = lines[-1].strip()
    assert last.startswith("Example: gwnmo-meta "), res.stdout
    # the example names real commands and options: they parse (then --help stops the command)
    example = shlex.split(last.removeprefix("Example: gwnmo-meta "))
    res = CliRunner().invoke(app, [*example, "--help"])
    assert res.exit_code == 0, (example, res.output)


def test_provenance_of_every_tuned_default_is_in_the_cli_reference():
    """Option help stays one line; each tuned default's value and source are in docs/CLI.md."""
    rows = [line for line in CLI_MD.read_text().splitlines() if line.startswith("| ")]
    tuned = [v for v in vars(defaults).values() if isinstance(v, Tuned)]
    for table in (defaults.INNER_LR, defaults.CLASSIC_LR, defaults.CLASSIC_BASE_LR):
        tuned += table.values()
    tuned += [m.inner_lr_all for m in METHODS.values() if m.inner_lr_all]
    assert len(tuned) > 20
    for t in tuned:
        assert any(t.source in row and f"{t.value:g}" in row for row in rows), t
    assert any(defaults.WEIGHTING_SOURCE in row and defaults.WEIGHTING in row for row in rows)
