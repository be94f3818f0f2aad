"""Smoke test: the environment imports and the CLI answers --help."""

from typer.testing import CliRunner


def test_dependencies_import():
    import higher
    import learn2learn
    import tensorboard
    import torch
    import typer

    import gwnmo_meta

    assert learn2learn.__version__ == "0.2.0"
    assert hasattr(higher, "innerloop_ctx")
    assert torch.tensor([1.0, 2.0]).sum().item() == 3.0
    assert gwnmo_meta.__version__
    assert typer and tensorboard


def test_cli_help_lists_commands():
    from gwnmo_meta.cli.app import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "version" in result.output


def test_learn2learn_import_is_quiet():
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gwnmo_meta.training.l2l import learn2learn; print(learn2learn().__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith("0.2")
    assert "Gym" not in out.stderr
