"""Spot check after the rebase: factored GWNMO (unrolled, task-batched) / MAML on the two heads.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/endtoend/spot_check.py

Three passes of 10 paired rounds per head (bench_speed's helpers); prints the ratios and median.
"""

import statistics
import sys

import torch

sys.path.insert(0, "benchmarks")
from bench_speed import fake_features, meta_step_fn, paired_times  # noqa: E402

from gwnmo_meta.methods import MethodConfig, build_method  # noqa: E402
from gwnmo_meta.tasks.episodes import TaskSpec  # noqa: E402

torch.set_num_threads(1)
for hidden in (None, 512):
    sampler = fake_features().sampler("train", TaskSpec(5, 1, 15), seed=0)

    def b(hidden=hidden, sampler=sampler, **kw):
        cfg = MethodConfig(**{"inner_steps": 5, "head_hidden": hidden, **kw})
        return meta_step_fn(build_method(cfg, 256, 5), sampler, 4)

    maml = b(method="maml")
    fac = b(method="gwnmo", weighting="factored", schedule="unrolled")
    rs = []
    for _ in range(3):
        a, m = paired_times(fac, maml, torch.device("cpu"), 10, warmup=2)
        rs.append(a / m)
    print(
        hidden,
        "factored tb / maml",
        [round(r, 2) for r in rs],
        "median",
        round(statistics.median(rs), 2),
    )
