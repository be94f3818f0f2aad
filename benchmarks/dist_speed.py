"""Meta-train tasks/s with 1 and 2 processes (torchrun, gloo, CPU) on the same meta-training run.

    GWNMO_DATA=../shared/data .venv/bin/python benchmarks/dist_speed.py   # → benchmarks/distributed/

Each configuration meta-trains GWNMO (defaults: coordinate M, alg2, task-batched) on MNIST 5-way
1-shot tasks with conv4 features (cached) for ``--steps`` meta-steps; the speed of one run is the
median of TensorBoard's ``speed/tasks_per_s`` (rank 0's wall time of a whole meta-step, all-reduce
included, for the global meta-batch) over its steps after ``--warmup``. Configurations alternate
within each repeat (the machine is shared, its speed drifts); the table shows the median over
repeats and the range. Threads: ``OMP_NUM_THREADS`` per process as given in each row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GWNMO = str(Path(sys.executable).with_name("gwnmo-meta"))
CONFIGS = [  # (label, processes, threads per process)
    ("1 process, 2 threads", 1, 2),
    ("1 process, 1 thread", 1, 1),
    ("2 processes (torchrun), 1 thread each", 2, 1),
]


def tasks_per_s(run: Path, warmup: int) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    values = [e.value for e in acc.Scalars("speed/tasks_per_s") if e.step > warmup]
    return statistics.median(values)


def one_run(procs: int, threads: int, meta_batch: int, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = [
            "meta-train", "--dataset", "mnist", "--meta-batch", str(meta_batch),
            "--meta-steps", str(steps), "--val-every", str(steps), "--val-tasks", "8",
            "--device", "cpu", "--out", str(out),
        ]  # fmt: skip
        launch = [GWNMO]
        if procs > 1:
            launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            launch += [f"--nproc_per_node={procs}", GWNMO]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([*launch, *args], env=env, check=True, capture_output=True)
        return tasks_per_s(out, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "distributed")
    a = parser.parse_args()
    results: dict[str, list[float]] = {}
    loads = []
    for r in range(a.repeats):
        for b in a.meta_batch:
            for label, procs, threads in CONFIGS:
                speed = one_run(procs, threads, b, a.steps, a.warmup)
                results.setdefault(f"{b}|{label}", []).append(speed)
                loads.append(os.getloadavg()[0])
                print(f"repeat {r + 1} meta-batch {b} {label}: {speed:.1f} tasks/s", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "benchmarks/dist_speed.py " + " ".join(sys.argv[1:]),
        "steps": a.steps,
        "warmup": a.warmup,
        "repeats": a.repeats,
        "cpus": os.cpu_count(),
        "load_average_1min": {"min": min(loads), "median": statistics.median(loads)},
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (a.out / "dist_speed.json").write_text(json.dumps({**meta, "runs": results}, indent=2) + "\n")
    lines = [
        f"Meta-train tasks/s, GWNMO defaults, MNIST 5-way 1-shot conv4 features, CPU; median of "
        f"{a.repeats} alternating repeats (range); {a.steps} steps per run, first {a.warmup} "
        f"skipped; 1-min load average during the runs: median {meta['load_average_1min']['median']:.1f} "
        f"on {os.cpu_count()} CPUs ({meta['finished']}).",
        "",
        "| meta-batch | launch | tasks/s | range | × 1 process, 2 threads |",
        "|---|---|---|---|---|",
    ]
    for b in a.meta_batch:
        ref = statistics.median(results[f"{b}|{CONFIGS[0][0]}"])
        for label, _, _ in CONFIGS:
            v = results[f"{b}|{label}"]
            med = statistics.median(v)
            lines.append(
                f"| {b} | {label} | {med:.0f} | {min(v):.0f}-{max(v):.0f} | {med / ref:.2f} |"
            )
    (a.out / "dist_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
