"""Cost of longer inner loops (issue 13 item 5): ms per meta-step (4 tasks) and per evaluated task.

MNIST features, linear head, learned init, task-batched where the method supports it, evaluation
50 tasks at a time. Run (output: benchmarks/protocol/speed_inner_steps.md):

    GWNMO_DATA=DIR python benchmarks/protocol/speed_inner_steps.py
"""

import time

import torch

from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluation.evaluate import evaluate_tasks
from gwnmo_meta.training.run_data import build_method_for, load_run_data, task_spec

torch.set_num_threads(1)

d = load_run_data(RunConfig(), torch.device("cpu"), progress=False)
for steps in (5, 20):
    for m in ["gwnmo", "gwnmo-prime", "maml", "meta-sgd", "hg", "sgd", "adam"]:
        cfg = RunConfig(
            method=m, inner_steps=steps, learn_init=True, weighting="coordinate"
        ).validate()
        meth = build_method_for(cfg, d.feature_dim, torch.device("cpu"))
        opt = meth.make_meta_optimizer()
        s = d.sampler("train", task_spec(cfg), 0)
        n = 10
        t = time.time()
        for _ in range(n):
            opt.zero_grad()
            if meth.task_batched:
                loss, _ = meth.episodes([s.sample() for _ in range(4)], True)
                loss.backward()
            else:
                for _ in range(4):
                    o = meth.episode(s.sample(), True)
                    (o.meta_loss / 4).backward()
            opt.step()
        ts = (time.time() - t) / n
        t = time.time()
        evaluate_tasks(
            meth, d.sampler("test", task_spec(cfg), 1), 100, progress=False, task_batch=50
        )
        te = (time.time() - t) / 100
        print(
            f"steps {steps} {m:12s} meta-step {1000 * ts:.0f} ms  eval {1000 * te:.1f} ms/task",
            flush=True,
        )
