"""Exact resume: SIGINT/SIGTERM at every phase of a run saves a state that resumes to exactly
the uninterrupted result (parameters, optimizer state, history, best checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gwnmo_meta.training.trainer as trainer
from gwnmo_meta.config import RunConfig
from gwnmo_meta.io.checkpoint import load_checkpoint

STEPS, VAL_EVERY = 4, 2


def tiny_cfg(root: Path, **kw) -> RunConfig:
    base = dict(
        data_root=str(root),
        backbone="none",
        meta_batch=2,
        val_tasks=4,
        query=3,
        inner_steps=2,
        meta_steps=STEPS,
        val_every=VAL_EVERY,
        device="cpu",
    )
    return RunConfig(**{**base, **kw})


def assert_same_run(a_dir: Path, b_dir: Path) -> None:
    """last.pt and best.pt of two runs hold identical state."""
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(a_dir / name), load_checkpoint(b_dir / name)
        assert a["step"] == b["step"], name
        assert a["history"] == b["history"], name
        assert a["best_val_accuracy"] == b["best_val_accuracy"], name
        for k in a["method"]:
            assert torch.equal(a["method"][k], b["method"][k]), (name, k)
        sa, sb = a["meta_optimizer"]["state"], b["meta_optimizer"]["state"]
        for i in sa:
            for k in sa[i]:
                assert torch.equal(sa[i][k], sb[i][k]), (name, i, k)
        assert a["sampler"]["rng"] == b["sampler"]["rng"], name


@pytest.fixture(scope="module")
def reference(tiny_data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    res = trainer.meta_train(tiny_cfg(tiny_data_root), out, progress=False)
    assert res.steps_done == STEPS and not res.interrupted
    return out


def _kill_self(sig: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.01)  # the handler runs here at the latest


def _resume_and_compare(cfg, out, reference):
    res = trainer.meta_train(cfg, out, resume=True, progress=False)
    assert res.steps_done == STEPS and not res.interrupted
    assert_same_run(reference, out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_inside_a_meta_step(tiny_data_root, tmp_path, reference, monkeypatch, sig):
    import gwnmo_meta.training.methods as methods

    calls = {"train": 0}
    real = methods.run_episodes

    def episodes(*args, **kwargs):
        if kwargs.get("train"):
            calls["train"] += 1
            if calls["train"] == 3:  # meta-step 3, after the forward pass has started
                _kill_self(sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(methods, "run_episodes", episodes)
    cfg, out = tiny_cfg(tiny_data_root), tmp_path / "run"
    res = trainer.meta_train(cfg, out, progress=False)
    assert res.interrupted and res.steps_done == 2 and res.signal == sig
    monkeypatch.setattr(methods, "run_episodes", real)
    _resume_and_compare(cfg, out, reference)


def test_sigint_inside_validation(tiny_data_root, tmp_path, reference, monkeypatch):
    real = trainer.evaluate_tasks

    def evaluate(method, sampler, tasks, **kwargs):
        sample, n = sampler.sample, {"k": 0}

        def interrupting_sample():
            n["k"] += 1
            if n["k"] == 2:
                _kill_self()
            return sample()

        sampler.sample = interrupting_sample
        try:
            return real(method, sampler, tasks, **kwargs)
        finally:
            sampler.sample = sample

    monkeypatch.setattr(trainer, "evaluate_tasks", evaluate)
    cfg, out = tiny_cfg(tiny_data_root), tmp_path / "run"
    res = trainer.meta_train(cfg, out, progress=False)
    assert res.interrupted and res.steps_done == 2  # meta-step 2 done, its validation cut off
    assert load_checkpoint(out / "last.pt")["pending_validation"]["step"] == 2
    monkeypatch.setattr(trainer, "evaluate_tasks", real)
    _resume_and_compare(cfg, out, reference)


@pytest.mark.parametrize("direct", [False, True])
def test_interrupt_inside_a_checkpoint_write(
    tiny_data_root, tmp_path, reference, monkeypatch, direct
):
    """A signal during the write is held back until both files are written; a
    KeyboardInterrupt raised there directly still leaves a consistent best.pt/last.pt pair."""
    real = trainer.save_checkpoint
    calls = {"n": 0}

    def save(path, payload):
        calls["n"] += 1
        if calls["n"] == 1:  # best.pt at the first validation
            if direct:
                raise KeyboardInterrupt
            _kill_self()
        return real(path, payload)

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    cfg, out = tiny_cfg(tiny_data_root), tmp_path / "run"
    res = trainer.meta_train(cfg, out, progress=False)
    assert res.interrupted and res.steps_done == 2
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    _resume_and_compare(cfg, out, reference)


def test_interrupt_between_meta_steps(tiny_data_root, tmp_path, reference):
    def stop(step):
        if step == 3:
            raise KeyboardInterrupt

    cfg, out = tiny_cfg(tiny_data_root), tmp_path / "run"
    res = trainer.meta_train(cfg, out, progress=False, on_step=stop)
    assert res.interrupted and res.steps_done == 3
    _resume_and_compare(cfg, out, reference)


def test_sigterm_to_a_cli_process_resumes_exactly(tiny_data_root, tmp_path):
    """A real SIGTERM to a running ``gwnmo-meta meta-train``: exit 143, last.pt, exact resume."""
    out = tmp_path / "run"
    args = ["--data-root", str(tiny_data_root), "--backbone", "none", "--meta-batch", "2"]
    args += ["--val-tasks", "4", "--query", "3", "--inner-steps", "2", "--device", "cpu"]
    args += ["--val-every", "1"]
    cmd = [sys.executable, "-m", "gwnmo_meta.cli.app", "meta-train", *args, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([*cmd, "--meta-steps", "100000"], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "best.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
    done = load_checkpoint(out / "last.pt")["step"]
    assert done >= 1
    # resume to two steps more (in this process), and compare with an uninterrupted run
    from typer.testing import CliRunner

    from gwnmo_meta.cli.app import app

    extra = ["--meta-steps", str(done + 2)]
    resumed = CliRunner().invoke(app, [*cmd[3:], *extra, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    ref = tmp_path / "ref"
    cmd[cmd.index("--out") + 1] = str(ref)
    full = CliRunner().invoke(app, [*cmd[3:], *extra])
    assert full.exit_code == 0, full.output
    assert_same_run(ref, out)


@pytest.mark.parametrize("bad_step", [1, 3])
def test_non_finite_parameters_are_never_checkpointed(
    tiny_data_root, tmp_path, monkeypatch, bad_step
):
    """A meta-update that makes parameters NaN while the meta-loss is still finite stops the run
    at once; last.pt stays the last good state and the message names a file that exists."""
    real, calls = torch.optim.Adam.step, {"n": 0}

    def step(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == bad_step:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    out = tmp_path / "run"
    with pytest.raises(trainer.TrainingDiverged, match=f"meta-step {bad_step}") as err:
        trainer.meta_train(tiny_cfg(tiny_data_root, val_every=1), out, progress=False)
    if bad_step == 1:
        assert "no checkpoint was written" in str(err.value)
        assert not list(out.glob("*.pt"))
    else:
        assert str(out / "last.pt") in str(err.value)
        for name in ("last.pt", "best.pt"):
            body = load_checkpoint(out / name)
            assert body["step"] <= bad_step - 1
            assert all(torch.isfinite(t).all() for t in body["method"].values())


def test_sampled_judge_run_resumes_exactly_and_differs_from_the_full_judge(
    tiny_data_root, tmp_path, reference
):
    """--judge-queries draws from the episodes' own seeds: an interrupted run resumes exactly."""
    cfg = tiny_cfg(tiny_data_root, judge_queries=1)
    whole = tmp_path / "whole"
    trainer.meta_train(cfg, whole, progress=False)

    def stop(step):
        if step == 3:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    assert trainer.meta_train(cfg, out, progress=False, on_step=stop).interrupted
    _resume_and_compare(cfg, out, whole)
    sampled, full = load_checkpoint(whole / "last.pt"), load_checkpoint(reference / "last.pt")
    assert any(not torch.equal(sampled["method"][k], full["method"][k]) for k in full["method"])
