"""Typer conventions: one error style, eager --version, --quiet and progress bars off a terminal."""

import sys

import pytest
from typer.testing import CliRunner

from gwnmo_meta import __version__
from gwnmo_meta.cli import app as cli
from gwnmo_meta.cli.common import progress_bars

runner = CliRunner()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["meta-train", "--method", "reptile"],
            "Invalid value for '--method': 'reptile' is not one",
        ),
        (["meta-train", "--ways", "five"], "Invalid value for '--ways'"),
        (["meta-train", "--device", "tpu"], "unknown device 'tpu'"),
        (["meta-train", "--no-such-flag"], "No such option: --no-such-flag"),
        (["evaluate"], "give a checkpoint to evaluate, or --method"),  # the checkpoint is optional
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_one_error_line_and_exit_2(args, message):
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert message.lower() in lines[0].lower()
    assert "╭" not in res.stderr and "Traceback" not in res.stderr


def test_eager_version_option_and_version_command():
    for args in (["--version"], ["--version", "meta-train", "--ways", "0"], ["version"]):
        res = runner.invoke(cli.app, args)
        assert res.exit_code == 0 and res.stdout.strip() == __version__, (args, res.output)


def test_progress_bars_only_on_a_terminal_and_never_with_quiet(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress_bars(quiet=False) and not progress_bars(quiet=True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress_bars(quiet=False)


def test_meta_train_help_groups_options_in_panels():
    res = CliRunner(env={"COLUMNS": "200"}).invoke(cli.app, ["meta-train", "--help"])
    assert res.exit_code == 0
    for name in ("Data", "Task", "Method", "Inner loop", "Meta-training", "Output"):
        assert f"╭─ {name} ─" in res.stdout, name
    assert "--quiet" in res.stdout


def test_progress_bars_stay_out_of_logs(tiny_data_root, tmp_path):
    """stderr is not a terminal here: no tqdm frames, with or without --quiet."""
    common = ["--data-root", str(tiny_data_root), "--backbone", "none", "--device", "cpu"]
    common += ["--meta-batch", "2", "--val-tasks", "4", "--query", "3", "--inner-steps", "1"]
    common += ["--meta-steps", "2", "--val-every", "2", "--test-tasks", "3"]
    for extra in ([], ["--quiet"]):
        out = tmp_path / f"run{len(extra)}"
        res = runner.invoke(cli.app, ["meta-train", *common, "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        assert "\r" not in res.stderr and "it/s" not in res.stderr, res.stderr
        assert "meta-trained 2 steps" in res.stdout


def test_config_relaunches_a_run_and_explicit_flags_override_it(tiny_data_root, tmp_path):
    import json

    import torch

    first = tmp_path / "first"
    args = ["meta-train", "--data-root", str(tiny_data_root), "--backbone", "none", "-q"]
    args += ["--ways", "4", "--query", "3", "--inner-steps", "1", "--meta-batch", "2"]
    args += ["--val-tasks", "4", "--meta-steps", "2", "--val-every", "2", "--device", "cpu"]
    args += ["--schedule", "alg1", "--weighting-hidden", "8"]
    assert runner.invoke(cli.app, [*args, "--out", str(first)]).exit_code == 0
    saved = json.loads((first / "config.json").read_text())

    second = tmp_path / "second"  # a new run with the saved settings, one of them overridden
    cmd = ["meta-train", "--config", str(first / "config.json"), "--out", str(second), "-q"]
    res = runner.invoke(cli.app, [*cmd, "--meta-steps", "3", "--val-every", "3"])
    assert res.exit_code == 0, res.output
    relaunched = json.loads((second / "config.json").read_text())
    assert relaunched == {**saved, "meta_steps": 3, "val_every": 3}
    assert relaunched["ways"] == 4 and relaunched["schedule"] == "alg1"

    # --out defaults to the config's RUN_DIR: --resume continues the first run
    cmd = ["meta-train", "--config", str(first / "config.json"), "--resume", "-q"]
    res = runner.invoke(cli.app, [*cmd, "--meta-steps", "4"])
    assert res.exit_code == 0, res.output
    assert "meta-trained 4 steps" in res.stdout
    assert torch.load(first / "last.pt", weights_only=False)["step"] == 4

    res = runner.invoke(cli.app, ["meta-train", "--config", str(tmp_path / "none.json")])
    assert res.exit_code == 2 and res.stderr.startswith("error: cannot read config")
