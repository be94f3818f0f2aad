"""CUDA: a meta-training run on the GPU matches the same run on the CPU within float noise.

Marked ``cuda``: skipped where torch sees no CUDA device (CI); ``benchmarks/gpu_check.sh`` runs
them on a machine with one.
"""

from __future__ import annotations

import json

import pytest
import torch

from gwnmo_meta.config import RunConfig
from gwnmo_meta.training.trainer import meta_train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _run(root, out, device, schedule):
    cfg = RunConfig(
        data_root=str(root),
        backbone="none",
        meta_batch=2,
        val_tasks=20,
        query=3,
        inner_steps=2,
        meta_steps=6,
        val_every=3,
        schedule=schedule,
        device=device,
    )
    meta_train(cfg, out, progress=False, check_test=True)
    return json.loads((out / "test.json").read_text())


@pytest.mark.parametrize("schedule", ["alg1", "alg2", "unrolled"])
def test_cuda_run_matches_the_cpu_run(tiny_data_root, tmp_path, schedule):
    cpu = _run(tiny_data_root, tmp_path / "cpu", "cpu", schedule)
    gpu = _run(tiny_data_root, tmp_path / "gpu", "cuda", schedule)
    assert abs(cpu["accuracy_mean"] - gpu["accuracy_mean"]) < 0.02, (cpu, gpu)
    assert cpu["loss_mean"] == pytest.approx(gpu["loss_mean"], rel=1e-3)
