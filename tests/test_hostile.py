"""Hostile and careless input: every case exits 2 with one ``error:`` line, no traceback, runs
nothing it was handed, and writes nothing to the run folder."""

from __future__ import annotations

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
    from gwnmo_meta.checkpoint import content_digest

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
