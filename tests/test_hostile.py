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
        (lambda b: b["config"].__setitem__("head_hidden", 10**9), "of memory"),  # sizes to allocate
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


# ---- no write through a planted path ------------------------------------------------------------
def _planted(tmp_path: Path, kind: str) -> tuple[Path, object]:
    """A non-regular ``--json`` target and a way to see it is untouched."""
    import stat

    path = tmp_path / f"planted-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
        return path, stat.S_ISFIFO
    if kind == "device":  # a /dev/null clone: needs root
        if os.geteuid() != 0:
            pytest.skip("mknod of a device needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return path, stat.S_ISCHR
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path.symlink_to(victim)
    return path, stat.S_ISLNK


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink"])
def test_json_onto_a_non_regular_file_is_refused(good_run, tiny_data_root, tmp_path, kind):
    target, still = _planted(tmp_path, kind)
    res = invoke(
        "evaluate", good_run / "best.pt", "--data-root", tiny_data_root, "--tasks", "2",
        "--device", "cpu", "--json", target,
    )  # fmt: skip
    assert_refused(res)
    assert "not a regular file" in res.stderr
    assert still(os.lstat(target).st_mode), "the planted node was replaced"
    if kind == "symlink":
        assert (tmp_path / "victim.txt").read_text() == "precious\n"


def test_atomic_writer_never_replaces_a_link_or_a_node(tmp_path):
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.io.atomic import atomic_write_json

    fifo, _ = _planted(tmp_path, "fifo")
    link, _ = _planted(tmp_path, "symlink")
    for path in (fifo, link, tmp_path):
        with pytest.raises(ConfigError, match="not a regular file"):
            atomic_write_json(path, {"a": 1})
    assert link.is_symlink() and (tmp_path / "victim.txt").read_text() == "precious\n"
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "config.json", "test.json"])
def test_json_onto_the_runs_own_files_is_refused(good_run, tiny_data_root, tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    for f in good_run.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    (run / "test.json").write_text("{}\n")
    before = snapshot(run)
    res = invoke(
        "evaluate", run / "best.pt", "--data-root", tiny_data_root, "--tasks", "2",
        "--device", "cpu", "--json", run / name,
    )  # fmt: skip
    assert_refused(res, folder=run, before=before)
    assert "write the results elsewhere" in res.stderr


# ---- no unbounded allocation ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "cmd, classes",
    [
        ("meta-train", ["--train-classes", "0-1000000000"]),
        ("meta-train", ["--train-classes", "0-100000000000000000000"]),
        ("meta-train", ["--dataset", "mixed", "--test-classes", "cifar10:0-100000000000000000000"]),
        ("splits", ["--test-classes", "5-1000000000"]),
        ("splits", ["--val-classes", "3-100000000000000000000"]),
    ],
)
def test_huge_class_ranges_are_refused_before_they_are_expanded(
    tiny_data_root, tmp_path, cmd, classes
):
    out = ["--out", tmp_path / "out", *TINY] if cmd == "meta-train" else []
    res = invoke(cmd, "--data-root", tiny_data_root, *classes, *out)
    assert_refused(res)
    assert "does not exist" in res.stderr and "classes 0-9" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["meta-train", *TINY, "--meta-batch", "1000000000"],
        ["meta-train", *TINY, "--head-hidden", "1000000000"],
        ["meta-train", *TINY, "--weighting", "coordinate", "--weighting-hidden", "1000000000"],
        ["meta-train", *TINY, "--weighting-hidden", str(10**12)],
        ["meta-train", *TINY, "--method", "maml", "--inner-steps", "100000000"],
        ["train", "--backbone", "none", "--device", "cpu", "--hidden", "1000000000"],
    ],
    ids=["meta-batch", "head-hidden", "weighting-hidden", "int64-overflow", "inner-steps", "train"],
)
def test_sizes_that_cannot_fit_in_memory_are_refused_before_any_work(
    tiny_data_root, tmp_path, args
):
    out = tmp_path / "out"
    res = invoke(*args, "--data-root", tiny_data_root, "--out", out)
    assert_refused(res)
    assert any(w in res.stderr for w in ("of memory", "free", "too large")), res.stderr
    assert any(unit in res.stderr for unit in ("TiB", "PiB", "EiB", "too large")), res.stderr
    assert not out.exists()


def test_memory_estimate_admits_the_normal_configurations_and_reads_free_memory(monkeypatch):
    import gwnmo_meta.memory as memory
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.training.classic import ClassicConfig

    normal = [  # the defaults, the test configurations and the benchmark suites' settings
        RunConfig(),
        RunConfig(backbone="none", meta_batch=2, query=3, inner_steps=1),
        RunConfig(meta_steps=100, val_every=50, val_tasks=100, shots=5),  # protocol
        RunConfig(head_hidden=4096, shots=5, weighting="factored"),  # benchmarks/scale.sh
        RunConfig(adapt="all", method="maml"),  # conv4 end to end, second order
        RunConfig(weighting="mlp", schedule="unrolled"),
    ]
    for cfg in normal:
        need = memory.estimate_meta_train(cfg.validate()).total
        assert 0 < need < 4 * 1024**3, (cfg, memory.human(need))
    assert 0 < memory.estimate_classic(ClassicConfig().validate()).total < 1024**3
    cpu = torch.device("cpu")
    free = memory.available_bytes(cpu)
    assert free is not None and free > 0  # MemAvailable (or sysconf) on Linux
    memory.check_meta_train(RunConfig(), cpu)
    need = memory.estimate_meta_train(RunConfig()).total
    monkeypatch.setattr(memory, "_meminfo_available", lambda: need // 2)  # a machine too small
    with pytest.raises(ConfigError, match=f"needs about {memory.human(need)} .* available on cpu"):
        memory.check_meta_train(RunConfig(), cpu)
    calls = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: calls.append(d) or (10, 100))
    assert memory.available_bytes(torch.device("cuda:0")) == 10 and calls  # free, not total


def test_thesis_mlp_is_refused_by_free_memory_not_a_fixed_cap(monkeypatch):
    import gwnmo_meta.optim.nets as nets
    from gwnmo_meta.errors import ConfigError

    shapes = [(64, 256), (64,), (5, 64), (5,)]
    nets.build_weighting("mlp", 256, shapes)  # fits
    monkeypatch.setattr(nets, "available_bytes", lambda device: 1024)
    with pytest.raises(
        ConfigError, match=r"more than the 1 KiB free\); use --weighting coordinate"
    ):
        nets.build_weighting("mlp", 256, shapes)


@pytest.mark.parametrize("planted", ["lock-symlink", "lock-hardlink", "probe-symlink"])
@pytest.mark.parametrize("cmd", ["meta-train", "train"])
def test_a_planted_lock_or_probe_link_is_refused_and_its_target_untouched(
    tiny_data_root, tmp_path, planted, cmd
):
    from gwnmo_meta.io.runlock import LOCK_NAME
    from gwnmo_meta.training.trainer import PROBE_NAME

    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_text("precious\n")
    name = PROBE_NAME if planted.startswith("probe") else LOCK_NAME
    if planted.endswith("hardlink"):
        os.link(victim, run / name)
    else:
        (run / name).symlink_to(victim)
    args = [*TINY] if cmd == "meta-train" else ["--backbone", "none", "--device", "cpu"]
    res = invoke(cmd, *args, "--data-root", tiny_data_root, "--out", run)
    assert_refused(res)
    assert "refusing" in res.stderr
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in run.iterdir()) == [name]  # nothing else written


# ---- malicious --config ------------------------------------------------------------------------
def test_config_nested_too_deep_is_refused(tiny_data_root, tmp_path):
    deep = tmp_path / "config.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    res = invoke("meta-train", "--config", deep, "--data-root", tiny_data_root, *TINY)
    assert_refused(res)
    assert "not valid JSON" in res.stderr


@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "big"])
def test_config_that_is_not_a_small_regular_file_is_refused(tiny_data_root, tmp_path, source):
    if source == "fifo":
        path = tmp_path / "fifo.json"
        os.mkfifo(path)  # opening it for reading would block until a writer came
    elif source == "big":
        path = tmp_path / "big.json"
        path.write_text('{"seed": 0' + " " * (2 * 1024**2) + "}")
    else:
        path = Path(source)
    res = invoke("meta-train", "--config", path, "--data-root", tiny_data_root, *TINY)
    assert_refused(res)
    assert ("not a regular file" if source != "big" else "larger than 1024 KiB") in res.stderr


def test_an_empty_out_is_refused_not_the_current_folder(tiny_data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in (["meta-train", *TINY], ["train", "--backbone", "none", "--device", "cpu"]):
        res = invoke(
            *cmd,
            "--data-root",
            tiny_data_root,
            "--meta-steps" if cmd[0] != "train" else "--epochs",
            "1",
            "--out",
            "",
        )
        assert_refused(res)
        assert "'--out': is empty" in res.stderr
    res = invoke("benchmark", "quick", "--out", "")
    assert_refused(res)
    assert list(tmp_path.iterdir()) == []


# ---- error hints name the real source ------------------------------------------------------------
def test_cache_error_names_xdg_cache_home_when_the_folder_came_from_it(
    tiny_data_root, tmp_path, monkeypatch
):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.delenv("GWNMO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    res = invoke(
        "meta-train", "--data-root", tiny_data_root, "--backbone", "conv4", "--device", "cpu",
        "--meta-steps", "1", "--out", tmp_path / "out",
    )  # fmt: skip
    assert_refused(res)
    assert "$XDG_CACHE_HOME" in res.stderr and "$GWNMO_CACHE" not in res.stderr


def test_weighting_from_hint_names_the_checkpoints_own_weighting(
    good_run, tiny_data_root, tmp_path
):
    res = invoke(
        "train", "--data-root", tiny_data_root, "--backbone", "none", "--device", "cpu",
        "--epochs", "1", "--weighting", "mlp", "--weighting-from", good_run / "best.pt",
        "--out", tmp_path / "t",
    )  # fmt: skip
    assert_refused(res)
    kind = _body(good_run)["config"]["weighting"]  # the run's M (not the train default, mlp)
    assert kind != "mlp"
    assert f"the checkpoint's M is --weighting {kind}; pass --weighting {kind}" in res.stderr


# ---- protocol suite files: recoverable -----------------------------------------------------------
def _tiny_protocol(root: Path):
    from gwnmo_meta.suites.protocol import build_protocol
    from tests.helpers import tiny_base

    base = tiny_base(root, meta_steps=2, val_every=1, val_tasks=4, inner_steps=1)
    return build_protocol(
        base=base, sources=("mnist",), shots=(1,), regimes=("learned",), methods=("sgd", "prototype"),
        seeds=(0,), test_tasks=4, grid_points=1,
    )  # fmt: skip


def _cells(out: Path) -> dict[str, object]:
    """Every cell file's content, without its timings."""
    return {
        str(p.relative_to(out)): {
            k: v
            for k, v in json.loads(p.read_text()).items()
            if k not in ("seconds", "cpu_seconds")
        }
        for p in sorted(out.glob("cells/*/*.json"))
    }


def test_damaged_protocol_files_are_recomputed_or_refused_with_a_way_out(
    tiny_data_root, tmp_path, capsys
):
    """Cell files cut off or wrongly shaped are recomputed (warning); suite.json is refused."""
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.suites.protocol import run_protocol

    suite, out = _tiny_protocol(tiny_data_root), tmp_path / "suite"
    run_protocol(suite, out, progress=False)
    good = _cells(out)
    (sgd,) = out.glob("cells/*-sgd-*")
    (proto,) = out.glob("cells/*-prototype-*")
    damage = {
        sgd / "val.json": lambda t: t[: len(t) // 2],  # truncated
        sgd / "test.json": lambda t: json.dumps({"cell": 3, "eval": "x"}),  # wrong types
        proto / "val.json": lambda t: "[1, 2, 3]\n",  # wrong shape
        proto / "test.json": lambda t: json.dumps({"cell": "c", "eval": {"accuracy_mean": 1}}),
    }
    for path, spoil in damage.items():
        path.write_text(spoil(path.read_text()))
    capsys.readouterr()
    run_protocol(suite, out, progress=False)
    err = capsys.readouterr().err
    assert err.count("warning:") == 4 and "recomputing" in err
    assert _cells(out) == good
    for bad in ('{"meta_steps": 10', "[]", "[" * 100_000):
        (out / "suite.json").write_text(bad)
        with pytest.raises(ConfigError, match="delete suite.json and rerun"):
            run_protocol(suite, out, progress=False)
