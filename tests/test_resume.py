"""Exact resume: SIGINT/SIGTERM at every phase of a run saves a state that resumes to exactly
the uninterrupted result (parameters, optimizer state, history, best checkpoint)."""

from __future__ import annotations

import json
import math
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

    def save(path, payload, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # best.pt at the first validation
            if direct:
                raise KeyboardInterrupt
            _kill_self()
        return real(path, payload, **kwargs)

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


# ---- the run folder is the run's: deleted or replaced under it, the run stops --------------------
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_run_whose_folder_is_deleted_or_replaced_stops_and_never_recreates_it(
    tiny_data_root, tmp_path, how
):
    import shutil

    from gwnmo_meta.io.runlock import LOCK_NAME, RunFolderLost, RunLock

    out, other = tmp_path / "run", []

    def sabotage(step):
        if step == 1:  # before the first checkpoint (validation every 2 steps)
            while out.exists():  # TensorBoard's writer thread may add a file meanwhile
                shutil.rmtree(out, ignore_errors=True)
            if how == "replaced":  # and a second run took the folder name over
                out.mkdir()
                other.append(RunLock(out).acquire())

    with pytest.raises(RunFolderLost, match="deleted or replaced"):
        trainer.meta_train(tiny_cfg(tiny_data_root), out, progress=False, on_step=sabotage)
    if how == "deleted":
        assert not out.exists()
    else:
        assert (out / LOCK_NAME).is_file()  # the new run's lock is kept
        assert not list(out.glob("*.pt")) and not (out / "config.json").exists()
        other[0].release()


def test_cli_stops_with_exit_1_when_the_run_folder_goes_away(tiny_data_root, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from gwnmo_meta.cli.app import app

    out = tmp_path / "run"
    real = trainer.MetaTrainer.validate

    def validate(self):
        while out.exists():  # TensorBoard's writer thread may add a file meanwhile
            shutil.rmtree(out, ignore_errors=True)
        return real(self)

    monkeypatch.setattr(trainer.MetaTrainer, "validate", validate)
    args = ["meta-train", "--data-root", str(tiny_data_root), "--backbone", "none"]
    args += ["--meta-batch", "2", "--val-tasks", "4", "--query", "3", "--inner-steps", "1"]
    res = CliRunner().invoke(
        app, [*args, "--device", "cpu", "--meta-steps", "2", "--out", str(out)]
    )
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the run folder"), res.stderr
    assert not out.exists()


# ---- every stop leaves a folder that resumes ------------------------------------------------------
def test_a_disk_full_at_the_first_checkpoint_resumes_from_best_pt(
    tiny_data_root, tmp_path, reference, monkeypatch, capsys
):
    from gwnmo_meta.errors import ConfigError

    real = trainer.save_checkpoint

    def save(path, payload, **kwargs):
        if path.name == "last.pt":
            raise ConfigError(f"cannot write {path}: No space left on device")
        return real(path, payload, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    cfg, out = tiny_cfg(tiny_data_root), tmp_path / "run"
    with pytest.raises(ConfigError, match="No space left"):
        trainer.meta_train(cfg, out, progress=False)
    assert (out / "best.pt").is_file() and not (out / "last.pt").exists()
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    capsys.readouterr()
    _resume_and_compare(cfg, out, reference)
    assert "resuming from best.pt" in capsys.readouterr().err


def test_a_run_stopped_between_its_final_best_pt_and_last_pt_completes_last_pt(
    tiny_data_root, tmp_path, reference, capsys
):
    """Killed after the final validation's best.pt but before its last.pt: the resume has no step
    left to run, and still leaves last.pt at the final state (as the uninterrupted run does)."""
    import shutil

    cfg, out = tiny_cfg(tiny_data_root), tmp_path / "run"
    trainer.meta_train(cfg.replace(meta_steps=VAL_EVERY), out, progress=False)  # last.pt: step 2
    shutil.copy(reference / "last.pt", out / "best.pt")  # the final state, written first
    os.utime(out / "last.pt", ns=(1, 1))  # older than best.pt
    capsys.readouterr()
    res = trainer.meta_train(cfg, out, resume=True, progress=False)
    assert res.steps_done == STEPS and "resuming from best.pt" in capsys.readouterr().err
    last, ref = load_checkpoint(out / "last.pt"), load_checkpoint(reference / "last.pt")
    assert last["step"] == ref["step"] == STEPS
    assert all(torch.equal(last["method"][k], ref["method"][k]) for k in ref["method"])


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_afresh(
    tiny_data_root, tmp_path, reference, capsys
):
    cfg, out = tiny_cfg(tiny_data_root), tmp_path / "run"
    out.mkdir()
    cfg.save(out / "config.json")  # all a run killed while loading its data leaves behind
    (out / "events.out.tfevents.1").write_bytes(b"")
    _resume_and_compare(cfg, out, reference)
    assert "starting it afresh" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(trainer.ConfigError, match="no checkpoint to resume"):
        trainer.meta_train(cfg, empty, resume=True, progress=False)


def test_resume_on_other_data_is_refused_unless_allowed(tiny_data_root, tmp_path):
    from gwnmo_meta.errors import DataError
    from tests.conftest import write_tiny_datasets

    cfg, out = tiny_cfg(tiny_data_root, meta_steps=1, val_every=1), tmp_path / "run"
    trainer.meta_train(cfg, out, progress=False)
    other = write_tiny_datasets(tmp_path / "other", seed=1)
    longer = cfg.replace(meta_steps=2, data_root=str(other))
    before = (out / "last.pt").read_bytes()
    with pytest.raises(DataError, match="--allow-data-change"):
        trainer.meta_train(longer, out, resume=True, progress=False)
    assert (out / "last.pt").read_bytes() == before
    res = trainer.meta_train(longer, out, resume=True, progress=False, allow_data_change=True)
    assert res.steps_done == 2


def test_resume_with_fewer_meta_steps_than_done_is_refused(tiny_data_root, tmp_path, reference):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    config = (out / "config.json").read_text()
    with pytest.raises(trainer.ConfigError, match=f"fewer than the {STEPS} meta-steps"):
        trainer.meta_train(tiny_cfg(tiny_data_root, meta_steps=2), out, resume=True, progress=False)
    assert (out / "config.json").read_text() == config  # the history stays truthful


# ---- SIGTERM is SIGTERM everywhere (exit 143) -----------------------------------------------------
def test_sigterm_during_conv4_pretraining_exits_143(tiny_data_root, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import gwnmo_meta.tasks.fewshot as fewshot
    from gwnmo_meta.cli.app import app

    monkeypatch.setenv("GWNMO_CACHE", str(tmp_path / "cache"))  # nothing cached: pre-train

    def pretrain(*args, **kwargs):
        _kill_self(signal.SIGTERM)
        raise AssertionError("not interrupted")

    monkeypatch.setattr(fewshot, "pretrain_conv4", pretrain)
    res = CliRunner().invoke(
        app,
        [
            "meta-train",
            "--data-root",
            str(tiny_data_root),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == 143, res.output
    assert res.stderr.strip() == "error: interrupted"


def test_sigterm_inside_a_benchmark_cell_is_reported_as_sigterm(
    tiny_data_root, tmp_path, monkeypatch
):
    from gwnmo_meta.io.interrupts import exit_code
    from gwnmo_meta.suites.grid import build_suite, run_suite
    from tests.helpers import tiny_base

    real = trainer.MetaTrainer.meta_step

    def meta_step(self):
        _kill_self(signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(trainer.MetaTrainer, "meta_step", meta_step)
    base = tiny_base(tiny_data_root, inner_steps=1, val_tasks=4)
    suite = build_suite("quick", methods=("sgd",), meta_steps=2, test_tasks=2, base=base)
    with pytest.raises(KeyboardInterrupt) as stop:
        run_suite(suite, tmp_path / "bench", progress=False)
    assert exit_code(stop.value) == 143  # what the CLI exits with (it was 130)


# ---- classic training: interrupted, resumed exactly ---------------------------------------------
def _classic_features(n=230, dim=12, classes=4):
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(classes, dim, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    return x[:180], y[:180], x[180:], y[180:]


def _classic_cfg(optimizer, schedule="alg1", base="grad"):
    from gwnmo_meta.training.classic import ClassicConfig

    lr = {"adam": 0.01}.get(optimizer, 0.1 if base == "grad" else 0.01)
    return ClassicConfig(
        optimizer=optimizer, schedule=schedule, epochs=3, batch_size=32, hidden=8, reps=2, lr=lr,
        device="cpu", base=base,
    )  # fmt: skip


def _same_classic(a: Path, b: Path) -> None:
    assert (a / "results.json").read_text() == (b / "results.json").read_text()
    if (a / "weighting.pt").exists():
        ma, mb = load_checkpoint(a / "weighting.pt"), load_checkpoint(b / "weighting.pt")
        assert ma["weighting"].keys() == mb["weighting"].keys()
        for k in ma["weighting"]:
            assert torch.equal(ma["weighting"][k], mb["weighting"][k]), k
    else:
        assert not (b / "weighting.pt").exists()


@pytest.mark.parametrize(
    "optimizer, schedule, batch, sig, base",
    [  # 6 batches an epoch, 3 epochs a rep, 2 reps
        (
            "gwnmo",
            "alg1",
            9,
            signal.SIGTERM,
            "grad",
        ),  # epoch 2: the update graph crosses the epoch end
        ("gwnmo", "alg2", 14, signal.SIGINT, "grad"),  # epoch 3
        ("gwnmo", "alg2", 21, signal.SIGTERM, "grad"),  # rep 2: M carried over from rep 1
        ("gwnmo", "alg1", 3, signal.SIGINT, "grad"),  # epoch 1: last.pt is the run's start
        ("adam", "alg1", 10, signal.SIGTERM, "grad"),
        ("gwnmo", "alg2", 9, signal.SIGTERM, "adam"),  # over Adam: its state before the update
    ],
)
def test_classic_train_interrupted_resumes_to_the_same_results_and_m(
    tmp_path, monkeypatch, optimizer, schedule, batch, sig, base
):
    import gwnmo_meta.training.classic as classic

    cfg, feats = _classic_cfg(optimizer, schedule, base), _classic_features()
    ref, out = tmp_path / "ref", tmp_path / "run"
    classic.train_classic(cfg, ref, progress=False, features=feats)
    learner = classic.OnlineGWNMO if optimizer.startswith("gwnmo") else classic.TorchLearner
    real, calls = learner.step, {"n": 0}

    def step(self, x, y):
        calls["n"] += 1
        if calls["n"] == batch:
            _kill_self(sig)
        return real(self, x, y)

    monkeypatch.setattr(learner, "step", step)
    with pytest.raises(KeyboardInterrupt) as stop:
        classic.train_classic(cfg, out, progress=False, features=feats)
    assert 128 + stop.value.signum == 128 + sig
    assert (out / "last.pt").is_file() and not (out / "results.json").exists()
    monkeypatch.setattr(learner, "step", real)
    with pytest.raises(trainer.ConfigError, match="already holds a run"):
        classic.train_classic(cfg, out, progress=False, features=feats)
    classic.train_classic(cfg, out, progress=False, features=feats, resume=True)
    _same_classic(ref, out)


def test_classic_cli_sigterm_exit_143_then_resume_over_a_stale_lock(
    tiny_data_root, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    import gwnmo_meta.training.classic as classic
    from gwnmo_meta.cli.app import app
    from gwnmo_meta.io.runlock import LOCK_NAME

    args = ["train", "--data-root", str(tiny_data_root), "--backbone", "none", "--device", "cpu"]
    args += ["--epochs", "3", "--hidden", "8", "--batch-size", "32", "--weighting", "coordinate"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert CliRunner().invoke(app, [*args, "--out", str(ref)]).exit_code == 0
    real, calls = classic.OnlineGWNMO.step, {"n": 0}

    def step(self, x, y):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2
            _kill_self(signal.SIGTERM)
        return real(self, x, y)

    monkeypatch.setattr(classic.OnlineGWNMO, "step", step)
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 143, res.output
    assert "interrupted; checkpoint saved to" in res.stdout and res.stderr == ""
    monkeypatch.setattr(classic.OnlineGWNMO, "step", real)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(f"{dead.pid}\n")  # as a SIGKILLed run leaves it
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    _same_classic(ref, out)
    assert not (out / LOCK_NAME).exists()


# ---- fault injection: SIGKILL at random moments, then resume --------------------------------------
KILLS = 3  # SIGKILLs per pipeline


def _run_killed(args: list[str], delay: float) -> int | None:
    """Run ``gwnmo-meta ARGS`` in a forked child (no interpreter start-up) and SIGKILL it after
    ``delay`` seconds; its exit code if it finished first, else ``None``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork()
            from gwnmo_meta.cli.app import app

            app(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _warm_imports() -> None:
    import higher  # noqa: F401

    import gwnmo_meta.evaluation.evaluate  # noqa: F401
    import gwnmo_meta.memory  # noqa: F401
    import gwnmo_meta.suites.protocol  # noqa: F401
    import gwnmo_meta.tasks.fewshot  # noqa: F401
    import gwnmo_meta.training.classic  # noqa: F401
    import gwnmo_meta.training.methods  # noqa: F401
    from gwnmo_meta.training.l2l import learn2learn

    learn2learn()
    torch.cuda.is_available()


def _has_run(out: Path, names: tuple[str, ...]) -> bool:
    return any((out / n).exists() for n in names)


def _meta_args(root: Path, out: Path) -> list[str]:
    args = ["meta-train", "--data-root", str(root), "--backbone", "none", "--meta-batch", "2"]
    args += ["--val-tasks", "4", "--query", "3", "--inner-steps", "2", "--device", "cpu"]
    args += ["--meta-steps", "8", "--val-every", "2", "--test-tasks", "4", "-q", "--out", str(out)]
    return args + (["--resume"] if _has_run(out, ("config.json", "last.pt", "best.pt")) else [])


def _protocol_args(root: Path, out: Path) -> list[str]:
    args = ["benchmark", "protocol", "--sources", "mixed", "--shots", "1", "--regimes", "learned"]
    args += ["--methods", "sgd,prototype", "--seeds", "0,1", "--lr-values", "1"]
    args += ["--test-tasks", "4", "--val-tasks", "4", "--meta-steps", "4", "--inner-steps", "1"]
    args += ["--data-root", str(root), "--skip-integrity-check", "--backbone", "none"]
    return args + ["-q", "--out", str(out)]


def _classic_args(root: Path, out: Path) -> list[str]:
    args = ["train", "--data-root", str(root), "--backbone", "none", "--device", "cpu"]
    args += ["--epochs", "3", "--reps", "2", "--hidden", "8", "--batch-size", "32", "-q"]
    return args + ["--out", str(out)] + (["--resume"] if _has_run(out, ("last.pt",)) else [])


def _same_meta(ref: Path, out: Path) -> None:
    assert_same_run(ref, out)

    def strip(path: Path) -> dict[str, object]:  # the checkpoint's path names the folder
        return {k: v for k, v in json.loads(path.read_text()).items() if k != "checkpoint"}

    assert strip(ref / "test.json") == strip(out / "test.json")


def _same_protocol(ref: Path, out: Path) -> None:
    def cells(root: Path) -> dict[str, object]:
        found = {}
        for p in sorted(root.glob("cells/*/*.json")):
            timings = ("seconds", "cpu_seconds")
            rec = {k: v for k, v in json.loads(p.read_text()).items() if k not in timings}
            if isinstance(rec.get("eval"), dict):  # the checkpoint's path names the folder
                rec["eval"] = {k: v for k, v in rec["eval"].items() if k != "checkpoint"}
            found[str(p.relative_to(root))] = rec
        return found

    assert cells(ref) == cells(out)
    for last in ref.glob("cells/*/last.pt"):
        assert_same_run(last.parent, out / last.parent.relative_to(ref))

    def strip(run: Path) -> dict[str, object]:  # the budget holds timings
        results = json.loads((run / "results.json").read_text())
        return {k: v for k, v in results.items() if k != "budget"}

    assert strip(ref) == strip(out)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_reaches_the_uninterrupted_results(
    tiny_data_root, tmp_path, monkeypatch
):
    """meta-train, ``benchmark protocol`` and classic ``train``, each SIGKILLed at seeded random
    moments and resumed after every kill, end with the files of the uninterrupted run."""
    import random

    from typer.testing import CliRunner

    from gwnmo_meta.cli.app import app

    if not hasattr(os, "fork"):
        pytest.skip("needs fork()")
    seed = int(os.environ.get("GWNMO_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault-injection seed {seed} (repeat with GWNMO_FAULT_SEED={seed})")
    rng = random.Random(seed)
    torch.set_num_threads(1)  # as in the forked children: the same numbers everywhere
    _warm_imports()  # the children's time goes to the work, not to importing
    monkeypatch.setenv("COLUMNS", "200")
    pipelines = [
        ("meta-train", _meta_args, _same_meta),
        ("protocol", _protocol_args, _same_protocol),
        ("train", _classic_args, _same_classic),
    ]
    for name, args, same in pipelines:
        ref, out = tmp_path / f"{name}-ref", tmp_path / name
        t0 = time.monotonic()  # the uninterrupted run, forked as the others are
        assert _run_killed(args(tiny_data_root, ref), math.inf) == 0, f"{name}: reference failed"
        duration = time.monotonic() - t0
        for k in range(KILLS):
            delay = rng.uniform(0.0, duration)
            code = _run_killed(args(tiny_data_root, out), delay)
            assert code in (None, 0), f"{name}: run {k + 1} exited {code} by itself (seed {seed})"
            state = sorted(p.name for p in out.iterdir()) if out.exists() else []
            print(f"{name}: {'killed' if code is None else 'done'} at {delay:.2f} s: {state}")
        res = CliRunner().invoke(app, args(tiny_data_root, out))  # resume to the end
        assert res.exit_code == 0, f"seed {seed}: {res.output}"
        same(ref, out)
