"""Cost of longer inner loops, a two-layer head and fixed init (issue 13 item 5), on MNIST features.

Per method and setting: seconds per meta-step (meta-batch 4, task-batched where the method
supports it) and milliseconds per evaluated task (evaluation adapts 4 or 50 tasks at a time).

    GWNMO_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/protocol/speed_steps.py \
        > benchmarks/protocol/speed_steps.md
"""

from __future__ import annotations

import time

import torch

from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluate import evaluate_tasks
from gwnmo_meta.run_data import build_method_for, load_run_data, task_spec


def main() -> None:
    torch.set_num_threads(1)
    data = load_run_data(RunConfig(), torch.device("cpu"), progress=False)
    print(
        "| method | init | head | inner steps | meta-step (ms) | eval, 4 at a time (ms/task) "
        "| eval, 50 at a time (ms/task) |"
    )
    print("|---|---|---|---|---|---|---|")
    for steps in (5, 20, 50):
        for head in (None, 64):
            for method, learn_init in (
                ("gwnmo", True),
                ("gwnmo", False),
                ("maml", True),
                ("sgd", False),
            ):
                cfg = RunConfig(
                    method=method, inner_steps=steps, learn_init=learn_init, head_hidden=head
                )
                m = build_method_for(cfg, data.feature_dim, torch.device("cpu"))
                opt = m.make_meta_optimizer()
                sampler = data.sampler("train", task_spec(cfg), 0)
                n, t0 = 3, time.perf_counter()
                for _ in range(n if opt is not None else 0):
                    opt.zero_grad()
                    if m.task_batched:
                        loss, _ = m.episodes([sampler.sample() for _ in range(4)], True)
                        loss.backward()
                    else:
                        for _ in range(4):
                            (m.episode(sampler.sample(), True).meta_loss / 4).backward()
                    opt.step()
                step_ms = 1000 * (time.perf_counter() - t0) / n if opt is not None else float("nan")
                evals = []
                for chunk in (4, 50):
                    t0 = time.perf_counter()
                    evaluate_tasks(
                        m,
                        data.sampler("test", task_spec(cfg), 1),
                        100,
                        progress=False,
                        task_batch=chunk,
                    )
                    evals.append(1000 * (time.perf_counter() - t0) / 100)
                print(
                    f"| {method} | {'learned' if learn_init else 'fixed'} | "
                    f"{'linear' if head is None else f'hidden {head}'} | {steps} | "
                    f"{'–' if step_ms != step_ms else f'{step_ms:.0f}'} | {evals[0]:.1f} | {evals[1]:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
