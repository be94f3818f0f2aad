"""Hostile and careless input: every case exits 2 with one ``error:`` line, no traceback, runs
nothing it was handed, and writes nothing to the run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gwnmo_meta.cli.app import app

runner = CliRunner()
TINY = ["--backbone", "none", "--meta-batch", "2", "--val-tasks", "4", "--query", "3"]
TINY += ["--inner-steps", "1", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and mtime (to prove nothing was written)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def assert_refused(res, *, marker: Path | None = None, folder: Path | None = None, before=None):
    """Exit 2, exactly one line on stderr starting with ``error:``, no traceback, no side effects."""
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    if marker is not None:
        assert not marker.exists(), "the hostile checkpoint ran code"
    if folder is not None:
        assert snapshot(folder) == before


class Evil:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def good_run(tiny_data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    res = invoke(
        "meta-train", "--data-root", tiny_data_root, "--out", out, *TINY,
        "--meta-steps", "2", "--val-every", "2",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def _body(good_run: Path) -> dict:
    return torch.load(good_run / "last.pt", weights_only=True)


def _evil_checkpoint(good_run: Path, path: Path, marker: Path) -> Path:
    body = _body(good_run)
    body["history"].append({"note": Evil(marker)})
    torch.save(body, path)
    return path


def _run_copy(good_run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in ("config.json", "last.pt"):
        (dest / f).write_bytes((good_run / f).read_bytes())
    return dest


def test_evaluate_refuses_a_checkpoint_that_runs_code(good_run, tiny_data_root, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _evil_checkpoint(good_run, tmp_path / "evil.pt", marker)
    res = invoke("evaluate", ckpt, "--data-root", tiny_data_root, "--tasks", "2", "--device", "cpu")
    assert_refused(res, marker=marker)
    assert "refusing checkpoint" in res.stderr


def test_resume_refuses_a_checkpoint_that_runs_code(good_run, tiny_data_root, tmp_path):
    marker = tmp_path / "pwned"
    run = _run_copy(good_run, tmp_path / "run")
    _evil_checkpoint(good_run, run / "last.pt", marker)
    before = snapshot(run)
    res = invoke(
        "meta-train", "--data-root", tiny_data_root, "--out", run, *TINY,
        "--meta-steps", "4", "--val-every", "2", "--resume",
    )  # fmt: skip
    assert_refused(res, marker=marker, folder=run, before=before)


def test_weighting_from_refuses_a_checkpoint_that_runs_code(good_run, tiny_data_root, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _evil_checkpoint(good_run, tmp_path / "evil.pt", marker)
    res = invoke(
        "train", "--data-root", tiny_data_root, "--backbone", "none", "--device", "cpu",
        "--weighting", "coordinate", "--weighting-from", ckpt, "--out", tmp_path / "classic",
    )  # fmt: skip
    assert_refused(res, marker=marker)
    assert not (tmp_path / "classic").exists()


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside a stored tensor (the zip's data/ records), not in the pickle."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw = bytearray(path.read_bytes())
    raw[offset + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_flipped_bytes_inside_a_tensor_are_refused(good_run, tiny_data_root, tmp_path):
    ckpt = tmp_path / "flipped.pt"
    ckpt.write_bytes((good_run / "best.pt").read_bytes())
    _flip_tensor_byte(ckpt)
    torch.load(ckpt, weights_only=True)  # still loads: torch does not check the zip CRC
    res = invoke("evaluate", ckpt, "--data-root", tiny_data_root, "--tasks", "2", "--device", "cpu")
    assert_refused(res)
    assert "damaged" in res.stderr


def _resave(body: dict, path: Path) -> Path:
    """Save ``body`` with a valid digest, as if gwnmo-meta had written it."""
    from gwnmo_meta.io.checkpoint import content_digest

    body = {k: v for k, v in body.items() if k != "sha256"}
    body["sha256"] = content_digest(body)
    torch.save(body, path)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b.pop("method"), "missing 'method'"),
        (lambda b: b.__setitem__("step", "3"), "'step' should be"),
        (lambda b: b.__setitem__("method", [1, 2]), "'method' should be"),
        (lambda b: b.__setitem__("rng", {"python": 1}), "'rng' should be"),
        (lambda b: b["config"].__setitem__("ways", "five"), "ways"),
        (lambda b: b["config"].__setitem__("evil", 1), "unknown configuration keys"),
        (lambda b: b.__setitem__("kind", "other"), "expected"),
        (lambda b: b.__setitem__("format_version", 1), "format version"),
    ],
)
def test_malformed_checkpoints_are_refused(good_run, tiny_data_root, tmp_path, mutate, message):
    body = _body(good_run)
    mutate(body)
    ckpt = _resave(body, tmp_path / "bad.pt")
    res = invoke("evaluate", ckpt, "--data-root", tiny_data_root, "--tasks", "2", "--device", "cpu")
    assert_refused(res)
    assert message in res.stderr


def test_checkpoint_naming_an_unimportable_class_is_refused(tiny_data_root, tmp_path):
    import pickle
    import zipfile

    ckpt = tmp_path / "ghost.pt"
    data = b"\x80\x02cnot_a_module\nGhost\nq\x00)\x81q\x01."  # protocol 2: GLOBAL + NEWOBJ
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("ghost/data.pkl", data)
        z.writestr("ghost/version", "3\n")
    with pytest.raises((ModuleNotFoundError, pickle.UnpicklingError, AttributeError, Exception)):
        torch.load(ckpt, weights_only=False)
    res = invoke("evaluate", ckpt, "--data-root", tiny_data_root, "--tasks", "2", "--device", "cpu")
    assert_refused(res)


# ---- options: refused before anything is loaded or written ------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["meta-train", "--meta-lr", "nan"], "--meta-lr must be a finite number"),
        (["meta-train", "--inner-lr", "inf"], "--inner-lr must be a finite number"),
        (["meta-train", "--meta-lr", "-inf"], "--meta-lr must be a finite number"),
        (["meta-train", "--seed", str(2**63)], "--seed must be an integer from 0"),
        (["meta-train", "--seed", "-1"], "--seed must be an integer from 0"),
        (["train", "--lr", "nan"], "--lr must be a finite number"),
        (["train", "--hg-beta", "inf"], "--hg-beta must be a finite number"),
        (["train", "--max-train-images", "0"], "--max-train-images must be positive"),
        (["train", "--max-train-images", "-3"], "--max-train-images must be positive"),
        (["benchmark", "quick", "--test-tasks", "0"], "--test-tasks must be positive"),
        (["benchmark", "quick", "--meta-steps", "0"], "--meta-steps must be positive"),
        (["benchmark", "quick", "--sources", "mixed"], "--sources apply only to the protocol"),
        (["benchmark", "protocol", "--datasets", "mnist"], "protocol suite: --datasets (use"),
        (["benchmark", "protocol", "--jobs", "2"], "protocol suite: --jobs"),
        (["benchmark", "protocol", "--lr-values", "0"], "--lr-values must be 1-5"),
    ],
)
def test_bad_options_are_refused_before_any_work(tiny_data_root, tmp_path, args, message):
    out = tmp_path / "out"
    device = [] if args[0] == "benchmark" else ["--device", "cpu"]
    res = invoke(*args, "--data-root", tiny_data_root, "--backbone", "none", *device, "--out", out)
    assert_refused(res)
    assert message in res.stderr
    assert not out.exists()


def test_evaluate_refuses_a_huge_seed_and_an_unwritable_json_first(good_run, tmp_path):
    res = invoke("evaluate", good_run / "best.pt", "--seed", 2**64, "--device", "cpu")
    assert_refused(res)
    assert "--seed" in res.stderr
    # no --data-root: evaluating would fail on the data; --json is checked before that
    res = invoke("evaluate", good_run / "best.pt", "--json", tmp_path, "--device", "cpu")
    assert_refused(res)
    assert "cannot write --json" in res.stderr


# ---- data and environment ---------------------------------------------------------------------
def _copy_root(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def test_idx_file_with_a_wrong_magic_number(tiny_data_root, tmp_path):
    root = _copy_root(tiny_data_root, tmp_path / "data")
    idx = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw = bytearray(idx.read_bytes())
    raw[3] = 0x99  # magic 0x00000803 → 0x00000899 (dimension count 0x99)
    idx.write_bytes(bytes(raw))
    out = tmp_path / "out"
    res = invoke(
        "meta-train", "--data-root", root, *TINY, "--meta-steps", "1", "--out", out
    )  # fmt: skip
    assert_refused(res)
    assert "cannot read mnist" in res.stderr
    assert not out.exists()


def test_hostile_cifar_pickle_is_not_unpickled_without_the_md5_check(tiny_data_root, tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    root = _copy_root(tiny_data_root, tmp_path / "data")
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": Evil(marker), "labels": []}))
    out = tmp_path / "out"
    res = invoke(
        "meta-train", "--data-root", root, "--dataset", "cifar10", "--skip-integrity-check",
        *TINY, "--meta-steps", "1", "--out", out,
    )  # fmt: skip
    assert_refused(res, marker=marker)
    assert "not a plain CIFAR-10 batch" in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("cache", ["file", "under-file"])
def test_unusable_cache_folder(tiny_data_root, tmp_path, monkeypatch, cache):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("GWNMO_CACHE", str(blocker if cache == "file" else blocker / "sub"))
    out = tmp_path / "out"
    res = invoke(
        "meta-train", "--data-root", tiny_data_root, "--backbone", "conv4", "--device", "cpu",
        "--meta-steps", "1", "--out", out,
    )  # fmt: skip
    assert_refused(res)
    assert "cache folder" in res.stderr
    assert not out.exists()


def test_non_utf8_out_path(tiny_data_root, tmp_path):
    out = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    res = invoke(
        "meta-train", "--data-root", tiny_data_root, *TINY, "--meta-steps", "1", "--out", out
    )
    assert_refused(res)
    assert "UTF-8" in res.stderr
    assert not out.exists()


# ---- run folders: one run each, never mixed -----------------------------------------------------
@pytest.mark.parametrize(
    "artefact", ["config.json", "test.json", "best.pt", "events.out.tfevents.1"]
)
def test_a_folder_holding_any_run_artefact_needs_resume(tiny_data_root, tmp_path, artefact):
    run = tmp_path / "run"
    run.mkdir()
    (run / artefact).write_text("{}")
    before = snapshot(run)
    res = invoke(
        "meta-train", "--data-root", tiny_data_root, *TINY, "--meta-steps", "1", "--out", run
    )
    assert_refused(res, folder=run, before=before)
    assert "already holds a run" in res.stderr


def test_classic_train_refuses_a_folder_holding_a_run(tiny_data_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    before = snapshot(run)
    res = invoke(
        "train", "--data-root", tiny_data_root, "--backbone", "none", "--device", "cpu",
        "--epochs", "1", "--out", run,
    )  # fmt: skip
    assert_refused(res, folder=run, before=before)
    assert "already holds a run" in res.stderr


def test_a_locked_run_folder_is_refused_and_a_stale_lock_taken_over(tiny_data_root, tmp_path):
    import subprocess
    import sys

    from gwnmo_meta.io.runlock import LOCK_NAME, RunLock

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom gwnmo_meta.io.runlock import RunLock\n"
         f"RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        for cmd in (["meta-train", *TINY], ["train", "--backbone", "none", "--device", "cpu"]):
            res = invoke(*cmd, "--data-root", tiny_data_root, "--out", run)
            assert_refused(res, folder=run, before=before)
            assert f"in use by process {holder.pid}" in res.stderr
    finally:
        holder.kill()
        holder.wait()
    assert (run / LOCK_NAME).exists()  # left behind by the killed holder: stale
    with RunLock(run) as lock:
        assert lock.stale_pid == holder.pid
    assert not (run / LOCK_NAME).exists()


# ---- benchmark ----------------------------------------------------------------------------------
def _bench(root: Path, out: Path):
    return invoke(
        "benchmark", "quick", "--methods", "sgd", "--meta-steps", "2", "--test-tasks", "2",
        "--data-root", root, "--backbone", "none", "--device", "cpu", "--out", out,
    )  # fmt: skip


def test_read_only_results_csv_is_refused_before_training(tiny_data_root, tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.csv").write_text("old\n")
    (out / "results.csv").chmod(0o444)
    res = _bench(tiny_data_root, out)
    assert_refused(res)
    assert "results.csv" in res.stderr and "read-only" in res.stderr
    assert not (out / "cells").exists()
    assert (out / "results.csv").read_text() == "old\n"


def test_corrupt_cell_result_is_recomputed_with_a_warning(tiny_data_root, tmp_path, capsys):
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.suites.grid import build_suite, run_suite

    base = RunConfig(
        data_root=str(tiny_data_root), backbone="none", query=3, inner_steps=1, meta_batch=2,
        val_tasks=4, device="cpu",
    )  # fmt: skip
    suite = build_suite("quick", methods=("sgd",), meta_steps=2, test_tasks=2, base=base)
    out = tmp_path / "bench"
    rows, _ = run_suite(suite, out, progress=False)
    (result,) = out.glob("cells/*/result.json")
    good = json.loads(result.read_text())
    result.write_text('{"cell": "truncat')
    capsys.readouterr()
    rows2, _ = run_suite(suite, out, progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rs]  # noqa: E731
    assert strip(rows2) == strip(rows)
    err = capsys.readouterr().err
    assert "warning:" in err and "recomputing" in err
    again = json.loads(result.read_text())
    assert again["evals"] == good["evals"] and again["history"] == good["history"]
