"""The scripts in examples/ run as a user would run them (subprocesses, tiny data, a timeout)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: object, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return out.stdout


def test_higher_inner_loop_example_lowers_the_held_out_query_loss():
    text = run_example("higher_inner_loop.py")
    before, after = map(float, re.search(r"loss .*: ([\d.]+) -> ([\d.]+)", text).groups())
    assert after < before, text


@pytest.mark.parametrize("weighting", ["coordinate", "factored"])
def test_torch_func_loop_example_lowers_the_held_out_query_loss(weighting):
    text = run_example("torch_func_loop.py", "--weighting", weighting)
    before, after = map(float, re.search(r"loss .*: ([\d.]+) -> ([\d.]+)", text).groups())
    assert after < before, text


@pytest.fixture(scope="module")
def example_run(tiny_data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("example") / "run"
    text = run_example("meta_train_api.py", "--data-root", tiny_data_root, "--out", out)
    return out, text


def test_meta_train_api_example_trains_and_evaluates(example_run):
    out, text = example_run
    assert "meta-trained 6 steps" in text and "meta-test on mnist: accuracy" in text, text
    assert {"best.pt", "last.pt", "config.json"} <= {p.name for p in out.iterdir()}


def test_gwnmo_optimizer_example_trains_with_the_meta_trained_m(example_run, tiny_data_root):
    out, _ = example_run
    text = run_example("gwnmo_optimizer.py", out / "best.pt", "--data-root", tiny_data_root)
    gwnmo, sgd = map(float, re.search(r"GWNMO ([\d.]+), SGD ([\d.]+)", text).groups())
    assert 0.0 <= gwnmo <= 1.0 and 0.0 <= sgd <= 1.0
    assert gwnmo > 0.2, text  # 10 classes: well above chance on the tiny, separable data
