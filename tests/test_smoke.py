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
