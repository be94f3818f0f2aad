"""Distributed meta-training (torchrun, gloo, 2 CPU processes) and parallel benchmark cells.

Every multi-process run here is tiny (raw-pixel features of the tiny datasets, a few meta-steps);
each rank runs with one thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gwnmo_meta.suites.grid import build_suite, run_suite
from gwnmo_meta.training.distributed import World
from tests.helpers import tiny_base

GWNMO = str(Path(sys.executable).with_name("gwnmo-meta"))
TINY = [
    "--backbone", "none", "--query", "3", "--inner-steps", "2", "--inner-lr", "0.03",
    "--meta-batch", "4", "--val-every", "2", "--val-tasks", "6", "--device", "cpu",
]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _torchrun(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, GWNMO, *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=False)["method"]


def _max_diff(a: Path, b: Path) -> float:
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    return max(float((pa[k] - pb[k]).abs().max()) for k in pa)


def test_shares_cover_every_task_once():
    for world_size in (1, 2, 3):
        ranks = [World(r, world_size) for r in range(world_size)]
        for n, chunk in ((4, 1), (7, 2), (6, 4), (1, 3)):
            shares = [w.chunk_slice(n, chunk) for w in ranks]
            assert shares[0][0] == 0 and shares[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
            assert all(lo % chunk == 0 for lo, _ in shares)  # whole chunks only
        assert [w.task_slice(6) for w in ranks][-1][1] == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(args: list[str], port: int, **env: str) -> list[subprocess.Popen]:
    """Two ranks started by hand (torchrun's variables, no agent): each rank's own exit code."""
    return [
        subprocess.Popen(
            [GWNMO, *args],
            env=_env(
                RANK=str(r),
                LOCAL_RANK=str(r),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                **env,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]


@pytest.fixture(scope="module")
def runs(tiny_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 4-step run in this process, the same with 2 processes, and a 2-process run cut at step
    2 then resumed with 2 processes and (a copy) with 1 process."""
    from typer.testing import CliRunner

    from gwnmo_meta.cli.app import app

    base = tmp_path_factory.mktemp("dist")
    data = ["meta-train", "--data-root", str(tiny_data_root), *TINY]
    cli = CliRunner()
    two, part = base / "two", base / "part"
    launches = [
        _popen_torchrun([*data, "--meta-steps", "4", "--test-tasks", "7", "--out", str(two)]),
        _popen_torchrun([*data, "--meta-steps", "2", "--out", str(part)]),
    ]
    one = base / "one"
    res = cli.invoke(app, [*data, "--meta-steps", "4", "--test-tasks", "7", "--out", str(one)])
    assert res.exit_code == 0, res.output
    done = [(p, *p.communicate(timeout=300)) for p in launches]
    for p, _out, err in done:
        assert p.returncode == 0, err
    shutil.copytree(part, base / "part1")
    resumed = _torchrun([*data, "--meta-steps", "4", "--out", str(part), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    res = cli.invoke(app, [*data, "--meta-steps", "4", "--out", str(base / "part1"), "--resume"])
    assert res.exit_code == 0, res.output
    return {"one": one, "two": two, "part": part, "part1": base / "part1", "stdout": done[0][1]}


def _popen_torchrun(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.Popen(
        [*cmd, GWNMO, *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_processes_take_the_same_meta_steps_as_one(runs):
    one, two = runs["one"], runs["two"]
    assert _max_diff(one, two) < 1e-5
    t1, t2 = (json.loads((r / "test.json").read_text()) for r in (one, two))
    assert 0.0 < t1["accuracy_mean"] < 1.0  # not a trivially perfect learner
    assert t2["accuracy_mean"] == t1["accuracy_mean"] and t2["tasks"] == t1["tasks"] == 7
    assert t2["loss_mean"] == pytest.approx(t1["loss_mean"], abs=1e-5)
    c1, c2 = (torch.load(r / "last.pt", weights_only=False) for r in (one, two))
    assert c2["sampler"] == c1["sampler"]  # the same tasks were drawn
    assert c2["world_size"] == 2 and c1["world_size"] == 1
    val = [[h.get("val_accuracy") for h in c["history"]] for c in (c1, c2)]
    assert val[0] == val[1] and None not in val[0]
    loss = [[h["meta_loss"] for h in c["history"]] for c in (c1, c2)]
    assert loss[1] == pytest.approx(loss[0], abs=1e-5)  # global meta-loss, all-reduced
    assert runs["stdout"].count("meta-trained 4 steps") == 1  # rank 0 reports, once
    assert len(list(two.glob("events.out.tfevents.*"))) == 1  # one TensorBoard writer


def test_resume_with_the_same_world_size_matches_the_uninterrupted_run(runs):
    assert _max_diff(runs["part"], runs["two"]) == 0.0
    a, b = (torch.load(r / "last.pt", weights_only=False) for r in (runs["part"], runs["two"]))
    assert a["sampler"] == b["sampler"] and a["step"] == b["step"] == 4


def test_resume_with_another_world_size_matches_the_uninterrupted_run(runs):
    assert _max_diff(runs["part1"], runs["one"]) < 1e-5


def test_sharded_test_evaluation_equals_unsharded(runs):
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint

    two = runs["two"]  # its test.json: 7 tasks in chunks of 4, rank 0 adapted 0-3, rank 1 4-6
    unsharded = evaluate_checkpoint(two / "best.pt", tasks=7, device="cpu", progress=False)
    assert json.loads((two / "test.json").read_text()) == unsharded


def test_meta_batch_not_divisible_by_world_size_is_one_error_exit_2_on_every_rank(
    tiny_data_root, tmp_path
):
    args = ["meta-train", "--data-root", str(tiny_data_root), *TINY, "--meta-batch", "3"]
    procs = _ranks([*args, "--out", str(tmp_path / "run")], _free_port())
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [2, 2]
    errors = [line for _, err in outs for line in err.splitlines() if line.strip()]
    assert errors == [
        "error: --meta-batch 3 is not divisible by the 2 processes; choose a multiple of 2"
    ]
    assert not (tmp_path / "run").exists()


def test_a_dying_rank_stops_the_others_in_bounded_time(tiny_data_root, tmp_path):
    from gwnmo_meta.io.checkpoint import KIND_META, load_checkpoint

    run = tmp_path / "run"
    args = ["meta-train", "--data-root", str(tiny_data_root), *TINY, "--meta-steps", "100000"]
    procs = _ranks([*args, "--out", str(run)], _free_port(), GWNMO_DIST_TIMEOUT="30")
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read()
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        assert time.monotonic() - t0 < 60
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 0: another rank died"), err
    assert "Traceback" not in err
    assert load_checkpoint(run / "last.pt", KIND_META)["step"] >= 2


def test_benchmark_jobs_gives_the_serial_results_and_stays_resumable(tiny_data_root, tmp_path):
    base = tiny_base(tiny_data_root, inner_steps=1)
    suite = build_suite(
        "quick",
        methods=("gwnmo", "sgd"),
        schedules=("alg2",),
        meta_steps=2,
        test_tasks=4,
        base=base,
    )
    serial, _ = run_suite(suite, tmp_path / "serial", progress=False)
    parallel, _ = run_suite(suite, tmp_path / "parallel", progress=False, jobs=2)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]  # noqa: E731
    assert drop(parallel) == drop(serial) and len(serial) == 2
    results = sorted((tmp_path / "parallel" / "cells").glob("*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    again, _ = run_suite(suite, tmp_path / "parallel", progress=False, jobs=2)
    assert again == parallel and [p.stat().st_mtime_ns for p in results] == stamps
