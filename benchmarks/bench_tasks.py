"""Throughput of few-shot task sampling from cached features, next to one GWNMO-like meta-step.

    python benchmarks/bench_tasks.py                                  # synthetic MNIST-sized features
    python benchmarks/bench_tasks.py --dataset mnist --data-root /work/shared/data
    python benchmarks/bench_tasks.py --dataset cifar10 --data-root DIR --skip-integrity-check

Prints tasks/s of ``EpisodeSampler.sample()`` (learn2learn task description + one tensor gather)
for N-way K-shot Q-query tasks, and the time of one GWNMO-like step for comparison: a linear head
over the features adapted by a ``higher`` inner loop (``--inner-steps`` SGD steps on the support
loss), then the query loss backpropagated through the loop to the head's initialisation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _sampling_rate(sampler, tasks: int, repeats: int) -> list[float]:
    for _ in range(min(100, tasks)):  # warm-up
        sampler.sample()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(tasks):
            sampler.sample()
        rates.append(tasks / (time.perf_counter() - t0))
    return rates


def _meta_step_seconds(
    sampler, dim: int, ways: int, inner_steps: int, steps: int, device: torch.device
) -> float:
    import higher

    torch.manual_seed(0)
    head = torch.nn.Linear(dim, ways).to(device)
    meta_opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    inner_opt = torch.optim.SGD(head.parameters(), lr=0.5)
    episodes = [sampler.sample() for _ in range(steps + 3)]

    def step(ep) -> None:
        meta_opt.zero_grad()
        with higher.innerloop_ctx(head, inner_opt, copy_initial_weights=False) as (fhead, diffopt):
            for _ in range(inner_steps):
                diffopt.step(torch.nn.functional.cross_entropy(fhead(ep.support_x), ep.support_y))
            torch.nn.functional.cross_entropy(fhead(ep.query_x), ep.query_y).backward()
        meta_opt.step()

    for ep in episodes[:3]:
        step(ep)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for ep in episodes[3:]:
        step(ep)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dataset",
        default=None,
        help="mnist | fmnist | cifar10 (default: synthetic features, no data needed)",
    )
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--skip-integrity-check", action="store_true")
    ap.add_argument("--backbone", default="conv4")
    ap.add_argument("--part", default="train")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per timing repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--meta-steps", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gwnmo_meta.tasks.episodes import TaskSpec
    from gwnmo_meta.tasks.fewshot import FewShotConfig, prepare_fewshot, synthetic_fewshot

    device = torch.device(args.device)
    t0 = time.perf_counter()
    if args.dataset is None:
        data = synthetic_fewshot(
            num_classes=10, per_class=2400, dim=256
        )  # ≈ MNIST's 24k images, conv4 dims
        source = "synthetic (10 classes × 2400, D=256)"
    else:
        cfg = FewShotConfig(
            dataset=args.dataset,
            data_root=args.data_root,
            backbone=args.backbone,
            skip_integrity_check=args.skip_integrity_check,
        )
        data = prepare_fewshot(cfg, device)
        source = f"{args.dataset} / {args.backbone} features"
    prep = time.perf_counter() - t0
    spec = TaskSpec(args.ways, args.shots, args.query)
    t0 = time.perf_counter()
    sampler = data.sampler(args.part, spec, seed=0, device=device)
    build = time.perf_counter() - t0
    rates = _sampling_rate(sampler, args.tasks, args.repeats)
    rate = statistics.median(rates)
    step = _meta_step_seconds(
        sampler, data.feature_dim, args.ways, args.inner_steps, args.meta_steps, device
    )
    print(
        f"data: {source}; {len(data.labels)} images, D={data.feature_dim}; "
        f"prepare {prep:.2f}s, sampler build {build:.2f}s"
    )
    print(
        f"threads={torch.get_num_threads()} device={device} task={args.ways}-way {args.shots}-shot {args.query}-query "
        f"part={args.part}"
    )
    print(
        f"sampling: {rate:.0f} tasks/s (median of {args.repeats}×{args.tasks}: "
        + ", ".join(f"{r:.0f}" for r in rates)
        + f"), {1e6 / rate:.0f} us/task"
    )
    print(
        f"GWNMO-like step ({args.inner_steps}-step higher SGD inner loop on a linear head + meta-backward): "
        f"{step * 1e3:.2f} ms/step"
    )
    print(f"ratio sampling/step: {1 / rate / step:.3f}")


if __name__ == "__main__":
    main()
