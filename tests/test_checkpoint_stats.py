"""Checkpoint I/O, confidence intervals and device selection."""

import math
import random

import pytest
import torch

from gwnmo_meta.device import resolve_device
from gwnmo_meta.errors import CheckpointError, ConfigError
from gwnmo_meta.evaluation.stats import mean_ci95
from gwnmo_meta.io.checkpoint import (
    FORMAT_VERSION,
    KIND_CLASSIC,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)


def test_mean_ci95_matches_t_interval():
    values = [0.2, 0.4, 0.6, 0.8]
    r = mean_ci95(values)
    assert r.mean == pytest.approx(0.5)
    sd = math.sqrt(sum((v - 0.5) ** 2 for v in values) / 3)
    assert r.ci95 == pytest.approx(3.182446305 * sd / 2, rel=1e-6)  # t_{0.975, 3}
    assert mean_ci95([1.0]).ci95 == 0.0
    with pytest.raises(ValueError):
        mean_ci95([])


def test_ci_shrinks_with_more_tasks():
    g = torch.Generator().manual_seed(0)
    small = mean_ci95(torch.rand(50, generator=g).tolist())
    large = mean_ci95(torch.rand(5000, generator=g).tolist())
    assert large.ci95 < small.ci95 / 5


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(
        path, {"kind": KIND_CLASSIC, "config": {}, "weighting": {"w": torch.arange(3.0)}}
    )
    body = load_checkpoint(path, KIND_CLASSIC)
    assert body["format_version"] == FORMAT_VERSION
    assert torch.equal(body["weighting"]["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp files left behind


@pytest.mark.parametrize(
    "content, message",
    [(b"garbage bytes", "corrupt"), (None, "not found")],
)
def test_bad_checkpoints_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "c.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_incompatible_checkpoint_version_and_kind(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)
    save_checkpoint(path, {"kind": KIND_CLASSIC, "config": {}, "weighting": {}})
    with pytest.raises(CheckpointError, match="expected"):
        load_checkpoint(path, "gwnmo-meta/meta-train")


def test_rng_states_restore_reproduces_draws():
    state = rng_states()
    a = (random.random(), torch.rand(2))
    restore_rng_states(state)
    b = (random.random(), torch.rand(2))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
