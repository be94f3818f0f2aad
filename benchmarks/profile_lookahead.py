"""Where a look-ahead (alg2) meta-step's time goes at conv4 end to end, and what each saving gains.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_lookahead.py --out benchmarks/speed
    # → benchmarks/speed/profile-lookahead.{md,json}

One meta-step = 4 tasks × 5 inner steps, 5-way 1-shot 15-query, conv4 + linear head adapted from
32×32 images (``--adapt all``), GWNMO with the factored M, task-batched, on synthetic images of the
real size. Part 1: torch.profiler's self CPU time of one full-judge meta-step, grouped by what the
op does. Part 2: each candidate saving timed against the full-judge step in one loop (paired
medians, alternating step by step, so the machine's drift cancels in the ratio).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from bench_speed import fake_features, machine, meta_step_fn  # benchmarks/ is on sys.path
from torch.profiler import ProfilerActivity, profile

from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.training.methods import MethodConfig, build_method

GROUPS = (  # (group, substrings of the op name), first match wins
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("conv2d", "convolution", "mkldnn_conv")),
    ("batch norm", ("batch_norm", "native_batch_norm")),
    ("pooling / relu", ("max_pool", "relu", "threshold")),
    ("linear / matmul", ("mm", "addmm", "linear", "bmm", "matmul")),
    ("autograd engine / copies", ("copy_", "clone", "contiguous", "to_copy", "empty", "zero")),
    ("elementwise (M, GWNMO step, losses)", ("mul", "add", "sub", "div", "sigmoid", "sum", "pow")),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other"


def build_step(sampler, **kw):
    base = dict(
        method="gwnmo",
        weighting="factored",
        schedule="alg2",
        adapt="all",
        conv_bias=True,
        inner_steps=5,
    )
    cfg = MethodConfig(**{**base, **kw})
    return meta_step_fn(build_method(cfg, 3072, 5), sampler, 4)


def paired(fn, ref, rounds: int) -> tuple[float, float]:
    a, b = [], []
    for r in range(rounds + 1):
        for f, acc in ((fn, a), (ref, b)):
            t0 = time.perf_counter()
            f()
            if r:  # the first round warms up
                acc.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/speed"))
    args = ap.parse_args()
    torch.manual_seed(0)
    data = fake_features(dim=3072, per_class=100)
    sampler = data.sampler("train", TaskSpec(5, 1, 15), seed=0)
    full = build_step(sampler)
    full()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        full()
    by_group: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        by_group[group_of(ev.key)] += ev.self_cpu_time_total / 1e6
    total = sum(by_group.values())
    results: dict = {**machine(torch.device("cpu")), "profile_seconds": dict(by_group)}

    candidates = {
        "judge 3 queries/class (--judge-queries 3)": lambda: build_step(sampler, judge_queries=3),
        "judge 1 query/class (--judge-queries 1)": lambda: build_step(sampler, judge_queries=1),
        "no judge at all (unrolled: MAML's objective)": lambda: build_step(
            sampler, schedule="unrolled"
        ),
    }
    rows = {}
    for name, make in candidates.items():
        t, ref = paired(make(), full, args.rounds)
        rows[name] = {"seconds": t, "full_judge_seconds": ref, "ratio": t / ref}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    two = build_step(sampler)
    t2 = []
    t1 = []
    for r in range(args.rounds + 1):  # 2 threads vs 1, alternating
        for n, acc in ((2, t2), (1, t1)):
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            (two if n == 2 else full)()
            if r:
                acc.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    rows["2 intra-op threads instead of 1"] = {
        "seconds": statistics.median(t2),
        "full_judge_seconds": statistics.median(t1),
        "ratio": statistics.median(t2) / statistics.median(t1),
    }
    try:  # torch.compile of the whole meta-step (higher's patched modules inside)
        compiled = torch.compile(build_step(sampler))
        t, ref = paired(compiled, full, args.rounds)
        rows["torch.compile of the meta-step"] = {
            "seconds": t,
            "full_judge_seconds": ref,
            "ratio": t / ref,
        }
    except Exception as exc:  # noqa: BLE001 - report why it fails, whatever it is
        rows["torch.compile of the meta-step"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    results["candidates"] = rows

    lines = [
        f"# Where an alg2 meta-step's time goes at conv4 end to end ({results['cpu']}, "
        f"torch {torch.__version__}, {threads} thread(s))",
        "",
        "One full-judge meta-step (4 tasks × 5 inner steps, 5-way 1-shot 15-query), torch.profiler "
        "self CPU time by op group:",
        "",
        "| op group | seconds | share |",
        "|---|---|---|",
    ]
    for group, sec in sorted(by_group.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {group} | {sec:.3f} | {100 * sec / total:.0f}% |")
    lines += [
        "",
        f"Candidates, each paired with the full-judge step ({args.rounds} rounds, medians):",
        "",
        "| candidate | step (s) | full judge in the pair (s) | × full judge |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | fails: {row['error']} | | |")
        else:
            lines.append(
                f"| {name} | {row['seconds']:.2f} | {row['full_judge_seconds']:.2f} | "
                f"**{row['ratio']:.2f}** |"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile-lookahead.md").write_text("\n".join(lines) + "\n")
    (args.out / "profile-lookahead.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
