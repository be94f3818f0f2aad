"""Atomic writes: all or nothing, strict JSON, read-only files respected, stale temps removed."""

import json
import math
import subprocess
import sys

import pytest

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.io.atomic import (
    atomic_open,
    atomic_write_json,
    check_writable_file,
    remove_stale_temps,
)


def test_json_is_strict_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"loss": math.nan, "acc": [0.5, math.inf]})
    assert json.loads(path.read_text()) == {"loss": None, "acc": [0.5, None]}
    assert "NaN" not in path.read_text()
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half")
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text())["loss"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_read_only_files_and_folders_are_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("keep")
    path.chmod(0o444)
    with pytest.raises(ConfigError, match="read-only"):
        check_writable_file(path)
    with pytest.raises(ConfigError, match="read-only"), atomic_open(path) as fh:
        fh.write("x")
    assert path.read_text() == "keep"
    with pytest.raises(ConfigError, match="folder"):
        check_writable_file(tmp_path)


def test_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.pt.{dead_pid}.abc123.tmp"
    live = tmp_path / f".last.pt.{subprocess.os.getpid()}.def456.tmp"
    for p in (stale, live):
        p.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and not stale.exists()
