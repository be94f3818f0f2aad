"""Speed and cost of GWNMO vs learn2learn MAML / Meta-SGD, side by side in one run.

    .venv/bin/python benchmarks/bench_speed.py [--device cpu|cuda] [--out benchmarks/speed]

Measures, on identical episodes (5-way 1-shot 15-query, 256-dim unit-norm features like conv4's,
linear head, meta-batch 4, 5 inner steps unless stated):

1. task sampling from cached features (tasks/s) and its share of one GWNMO meta-step;
2. meta-step time of GWNMO (coordinate/mlp M, alg1/alg2, one task at a time and task-batched),
   Meta-SGD, SGD-with-learned-init, each timed alternately with learn2learn MAML (ratio per pair);
3. how step time grows with the number of inner steps and with the target's size;
4. scale: the per-coordinate M's size vs the thesis MLP's for growing targets, a >=1M-parameter
   target meta-trained with the coordinate M, and a ~17M-parameter target trained with GWNMO
   (torch optimizer) where the thesis MLP is refused (> 24 GiB of training state).

5. real sizes (``--only real-sizes`` runs this section alone, into speed-real-sizes.{md,json}):
   GWNMO with the factored M (and the per-coordinate M where affordable) against MAML on the
   linear head, the 134,149-parameter head (256→512→5) and conv4 end to end (``--adapt all``,
   5-way 1-shot 15-query 32×32 images), every row paired with MAML on the same target; GWNMO
   with MAML's objective (``--schedule unrolled``), and with the default one-step look-ahead alg2
   (its meta-loss evaluates the query set after every inner step: k query passes, not one), with
   the sampled judge (``--judge-queries``), and MAML's own SGD inner loop under alg2 (the
   look-ahead objective's cost with no M: a floor under GWNMO alg2's at the same judge).

Timings are medians over repeats after warm-up, in one process; section 2's ratios come from
alternating each method's steps with MAML's, which cancels this VM's slow speed drift.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.optim.gwnmo import GWNMO
from gwnmo_meta.optim.nets import (
    CoordinateWeighting,
    ThesisMLPWeighting,
    build_weighting,
    make_head,
)
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import FewShotData
from gwnmo_meta.tasks.splits import default_split, split_indices
from gwnmo_meta.training.methods import MethodConfig, build_method


def fake_features(
    dim: int = 256, per_class: int = 600, classes: int = 10, seed: int = 0
) -> FewShotData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    feats = F.normalize(
        torch.randn(classes, dim, generator=g)[labels] + torch.randn(len(labels), dim, generator=g),
        dim=1,
    )
    parts = split_indices(
        labels, torch.zeros(len(labels), dtype=torch.bool), default_split(classes)
    )
    return FewShotData(feats, labels, parts, default_split(classes), "synthetic-256")


def cpu_model() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """Where the timings were taken: device, torch version, threads and CPU model."""
    return {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, device, repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def meta_step_fn(method, sampler, meta_batch: int):
    """One meta-step as the trainer takes it (task-batched when the method is)."""
    opt = method.make_meta_optimizer()

    def step():
        opt.zero_grad(set_to_none=True)
        if method.task_batched:
            loss, _ = method.episodes([sampler.sample() for _ in range(meta_batch)], train=True)
            loss.backward()
        else:
            for _ in range(meta_batch):
                out = method.episode(sampler.sample(), train=True)
                (out.meta_loss / meta_batch).backward()
        opt.step()

    return step


def paired_times(fn, ref, device, rounds: int, warmup: int = 3) -> tuple[float, float]:
    """Medians of ``fn`` and ``ref`` timed alternately, step by step, in one loop.

    This VM's speed drifts by ±20% over minutes; alternating the two makes their ratio immune to it.
    """
    a, b = [], []
    for r in range(warmup + rounds):
        for f, acc in ((fn, a), (ref, b)):
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            if r >= warmup:
                acc.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


REAL_SIZE_TARGETS = {  # name → (MethodConfig overrides, feature dim of the episodes)
    "linear head (1,285)": (dict(), 256),
    "head 256→512→5 (134,149)": (dict(head_hidden=512), 256),
    "conv4 end to end (114,373)": (dict(adapt="all", conv_bias=True), 3072),
}
REAL_SIZE_ROWS = {  # name → (MethodConfig overrides, targets it runs on); MAML's objective
    "gwnmo factored unrolled, task-batched": (
        dict(method="gwnmo", weighting="factored", schedule="unrolled"),
        None,
    ),
    "gwnmo factored unrolled, one task at a time": (
        dict(method="gwnmo", weighting="factored", schedule="unrolled", task_batch=False),
        ("linear head (1,285)", "head 256→512→5 (134,149)"),
    ),
    "gwnmo-prime factored unrolled, task-batched": (
        dict(method="gwnmo-prime", weighting="factored", schedule="unrolled"),
        ("linear head (1,285)", "head 256→512→5 (134,149)"),
    ),
    "gwnmo coordinate unrolled, task-batched": (
        dict(method="gwnmo", weighting="coordinate", schedule="unrolled"),
        ("linear head (1,285)", "conv4 end to end (114,373)"),
    ),
    "gwnmo factored alg2 (one-step look-ahead), full judge, task-batched": (
        dict(method="gwnmo", weighting="factored", schedule="alg2"),
        None,
    ),
    "gwnmo factored alg2, judge 3 queries/class, task-batched": (
        dict(method="gwnmo", weighting="factored", schedule="alg2", judge_queries=3),
        None,
    ),
    "gwnmo factored alg2, judge 1 query/class, task-batched": (
        dict(method="gwnmo", weighting="factored", schedule="alg2", judge_queries=1),
        None,
    ),
    "sgd, learned init (higher), task-batched": (dict(method="sgd"), None),
    # the look-ahead objective with no M: MAML's SGD inner loop under alg2 (a floor under GWNMO's)
    "maml alg2 (look-ahead, no M), full judge, task-batched": (
        dict(method="maml", schedule="alg2"),
        None,
    ),
    "maml alg2 (look-ahead, no M), judge 3 queries/class, task-batched": (
        dict(method="maml", schedule="alg2", judge_queries=3),
        None,
    ),
}


def real_sizes(args, device: torch.device, out: Path) -> None:
    """Section 5: GWNMO vs MAML at real target sizes, rows paired with MAML, interleaved passes."""
    spec = TaskSpec(5, 1, 15)
    results: dict = {
        **machine(device),
        "repeats": args.repeats,
        "passes": args.passes,
        "rows": {},
    }
    cells = []
    for target, (tkw, dim) in REAL_SIZE_TARGETS.items():
        data = fake_features(dim=dim)
        sampler = data.sampler("train", spec, seed=0, device=device)

        def build(sampler=sampler, tkw=tkw, dim=dim, **kw):
            cfg = MethodConfig(**{"inner_steps": 5, **tkw, **kw})
            return meta_step_fn(build_method(cfg, dim, 5, device), sampler, 4)

        maml = build(method="maml")
        for name, (kw, only) in REAL_SIZE_ROWS.items():
            if only is None or target in only:
                cells.append((target, name, build(**kw), maml))
    pairs: dict = {}
    for _ in range(args.passes):  # interleaved passes: every row sees the VM's load in turn
        for target, name, fn, maml in cells:
            rounds = max(3, args.repeats // 3) if target.startswith("conv4") else args.repeats
            t, tm = paired_times(fn, maml, device, rounds, warmup=2)
            pairs.setdefault((target, name), []).append((t, tm))
    lines = [
        f"# GWNMO at real target sizes (device {device}, {results['cpu']}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        "",
        "Meta-step: 4 tasks × 5 inner steps, 5-way 1-shot 15-query; every row alternates its steps "
        "with learn2learn MAML's on the same target (medians), in "
        f"{args.passes} interleaved passes; × MAML is the median of the passes' ratios, with their range.",
        "",
        "| target | method | step (ms) | MAML in the pair (ms) | × MAML | range over passes |",
        "|---|---|---|---|---|---|",
    ]
    for (target, name), ps in pairs.items():
        ratios = [t / tm for t, tm in ps]
        row = {
            "seconds": statistics.median(t for t, _ in ps),
            "maml_seconds": statistics.median(tm for _, tm in ps),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
        }
        results["rows"][f"{target} | {name}"] = row
        lines.append(
            f"| {target} | {name} | {1e3 * row['seconds']:.1f} | {1e3 * row['maml_seconds']:.1f} | "
            f"**{row['ratio']:.2f}** | {min(ratios):.2f}-{max(ratios):.2f} |"
        )
    (out / "speed-real-sizes.md").write_text("\n".join(lines) + "\n")
    (out / "speed-real-sizes.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/speed")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--passes", type=int, default=3, help="passes over section 2's and 5's rows")
    ap.add_argument("--only", choices=("all", "real-sizes"), default="all")
    args = ap.parse_args()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only == "real-sizes":
        real_sizes(args, device, out)
        return
    data = fake_features()
    spec = TaskSpec(5, 1, 15)
    results: dict = machine(device)
    lines = [
        f"# Speed and cost (device {device}, {results['cpu']}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        "",
    ]

    # 1. sampling
    sampler = data.sampler("train", spec, seed=0, device=device)
    n = 2000
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        sampler.sample()
    sync(device)
    sample_s = (time.perf_counter() - t0) / n
    results["sampling_tasks_per_s"] = 1 / sample_s

    def build(**kw):
        return build_method(MethodConfig(**{"inner_steps": 5, **kw}), data.feature_dim, 5, device)

    # 2. meta-step times, each paired with MAML
    variants = [
        ("gwnmo coordinate alg2", dict(method="gwnmo", weighting="coordinate", task_batch=False)),
        (
            "gwnmo coordinate alg2, task-batched",
            dict(method="gwnmo", weighting="coordinate", task_batch=True),
        ),
        (
            "gwnmo coordinate alg1",
            dict(method="gwnmo", weighting="coordinate", schedule="alg1", task_batch=False),
        ),
        (
            "gwnmo coordinate alg1, task-batched",
            dict(method="gwnmo", weighting="coordinate", schedule="alg1", task_batch=True),
        ),
        (
            "gwnmo coordinate alg2, M hidden 8, task-batched",
            dict(method="gwnmo", weighting="coordinate", weighting_hidden=8, task_batch=True),
        ),
        ("gwnmo mlp alg2", dict(method="gwnmo", weighting="mlp", task_batch=False)),
        ("gwnmo mlp alg2, task-batched", dict(method="gwnmo", weighting="mlp", task_batch=True)),
        (
            "gwnmo-prime coordinate alg2, task-batched",
            dict(method="gwnmo-prime", weighting="coordinate", task_batch=True),
        ),
        ("meta-sgd (learn2learn)", dict(method="meta-sgd")),
        ("sgd, learned init (higher)", dict(method="sgd", task_batch=False)),
        ("sgd, learned init (higher), task-batched", dict(method="sgd", task_batch=True)),
    ]
    maml_step = meta_step_fn(build(method="maml"), sampler, 4)
    steps = {name: meta_step_fn(build(**kw), sampler, 4) for name, kw in variants}
    passes: dict = {name: [] for name, _ in variants}
    for _ in range(args.passes):  # passes minutes apart: the ratio itself depends on the VM's load
        for name, _ in variants:
            passes[name].append(paired_times(steps[name], maml_step, device, args.repeats))
    step_times: dict = {}
    for name, pairs in passes.items():
        ratios = [t / tm for t, tm in pairs]
        step_times[name] = {
            "seconds": statistics.median(t for t, _ in pairs),
            "maml_seconds": statistics.median(tm for _, tm in pairs),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
        }
    results["meta_step"] = step_times
    ref = step_times["gwnmo coordinate alg2"]["seconds"]
    lines += [
        f"Task sampling: **{results['sampling_tasks_per_s']:.0f} tasks/s** "
        f"({1e6 * sample_s:.0f} µs/task; 4 tasks = {100 * 4 * sample_s / ref:.2f}% of one GWNMO meta-step).",
        "",
        "Meta-step (4 tasks × 5 inner steps, 5-way 1-shot 15-query, 256-dim features, linear head). Each row "
        f"alternates its method's steps with learn2learn MAML's ({args.repeats} rounds, medians), in "
        f"{args.passes} passes over all rows; the ratio is the median of the passes' ratios, with their range:",
        "",
        "| method | step (ms) | tasks/s | MAML in the pair (ms) | × MAML | range over passes |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in step_times.items():
        lines.append(
            f"| {name} | {1e3 * r['seconds']:.1f} | {4 / r['seconds']:.0f} | {1e3 * r['maml_seconds']:.1f} | "
            f"**{r['ratio']:.2f}** | {min(r['ratios']):.2f}-{max(r['ratios']):.2f} |"
        )

    # 3. growth with inner steps and target size
    lines += [
        "",
        "Step time vs inner steps (ms; each GWNMO column paired with MAML):",
        "",
        "| inner steps | gwnmo coordinate alg2 | × MAML | same, task-batched | × MAML |",
        "|---|---|---|---|---|",
    ]
    results["inner_steps_scaling"] = {}
    for k in (1, 5, 10, 20):
        mm = meta_step_fn(build(method="maml", inner_steps=k), sampler, 4)
        row = {}
        for label, tb in (("gwnmo", False), ("gwnmo_task_batched", True)):
            t, tm = paired_times(
                meta_step_fn(build(method="gwnmo", inner_steps=k, task_batch=tb), sampler, 4),
                mm,
                device,
                max(5, args.repeats // 2),
            )
            row[label], row[label + "_maml"] = t, tm
        results["inner_steps_scaling"][k] = row
        lines.append(
            f"| {k} | {1e3 * row['gwnmo']:.1f} | {row['gwnmo'] / row['gwnmo_maml']:.2f} | "
            f"{1e3 * row['gwnmo_task_batched']:.1f} | {row['gwnmo_task_batched'] / row['gwnmo_task_batched_maml']:.2f} "
            f"|"
        )
    lines += [
        "",
        "Step time vs target size (two-layer head 256→H→5, 5 inner steps; ms, one block per method, "
        "so compare large ratios only):",
        "",
        "| H | target params | gwnmo coordinate | same, task-batched | coordinate, M hidden 8 | gwnmo mlp | maml | "
        "coordinate/maml | task-batched/maml | hidden-8/maml |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    results["target_scaling"] = {}
    for hidden in (None, 64, 512, 4096):
        params = sum(p.numel() for p in make_head(256, 5, hidden).parameters())
        row = {}
        for label, kw in (
            ("coordinate", dict(method="gwnmo", task_batch=False)),
            ("coordinate_tb", dict(method="gwnmo", task_batch=True)),
            ("coordinate_h8", dict(method="gwnmo", weighting_hidden=8, task_batch=False)),
            ("mlp", dict(method="gwnmo", weighting="mlp", task_batch=False)),
            ("maml", dict(method="maml")),
        ):
            try:
                m = build(head_hidden=hidden, **kw)
                row[label] = time_it(
                    meta_step_fn(m, sampler, 4), device, 3 if hidden == 4096 else 5, warmup=1
                )
            except (ConfigError, RuntimeError) as exc:
                row[label] = None
                row[label + "_error"] = str(exc)[:120]
        results["target_scaling"][params] = row
        fmt = lambda v: "n/a" if v is None else f"{1e3 * v:.1f}"  # noqa: E731

        def ratio(k, row=row):
            return "n/a" if not row.get(k) or not row.get("maml") else f"{row[k] / row['maml']:.2f}"

        lines.append(
            f"| {hidden or '-'} | {params:,} | {fmt(row.get('coordinate'))} | {fmt(row.get('coordinate_tb'))} | "
            f"{fmt(row.get('coordinate_h8'))} | {fmt(row.get('mlp'))} | {fmt(row.get('maml'))} | "
            f"{ratio('coordinate')} | {ratio('coordinate_tb')} | {ratio('coordinate_h8')} |"
        )

    # 4. scale: sizes of M, a 17M-parameter target trained with GWNMO
    lines += [
        "",
        "Size of M (parameters; thesis MLP with hidden 32) for growing targets:",
        "",
        "| target params | coordinate M | thesis MLP M | thesis MLP training state (GiB, fp32 weights+grads+Adam) |",
        "|---|---|---|---|",
    ]
    coord = sum(p.numel() for p in CoordinateWeighting(256).parameters())
    results["m_sizes"] = {}
    for p_count in (1_285, 1_000_000, 17_000_000, 100_000_000):
        mlp = ThesisMLPWeighting.parameter_count(256, p_count, 32)
        results["m_sizes"][p_count] = {"coordinate": coord, "mlp": mlp}
        lines.append(f"| {p_count:,} | {coord:,} | {mlp:,} | {mlp * 16 / 1024**3:.1f} |")
    big_hidden = 65_536
    head = make_head(256, 5, big_hidden).to(device)
    big_params = sum(p.numel() for p in head.parameters())
    shapes = [tuple(p.shape) for p in head.parameters()]
    try:
        build_weighting("mlp", 256, shapes)
        refused = "built (unexpected)"
    except ConfigError as exc:
        refused = str(exc)
    m = build_weighting("coordinate", 256, shapes).to(device)
    opt = GWNMO(head.parameters(), m, lr=1.0)
    x = sampler.sample()
    losses = []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(head(x.support_x), x.support_y)
        loss.backward()
        opt.step(features=x.support_x)
        losses.append(float(loss.detach()))
    big_t = (time.perf_counter() - t0) / 5
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["big_target"] = {
        "params": big_params,
        "step_seconds": big_t,
        "losses": losses,
        "mlp_refused": refused,
        "max_rss_gib_after": rss1 / 1024**2,
        "max_rss_gib_before": rss0 / 1024**2,
    }
    lines += [
        "",
        f"A {big_params:,}-parameter target (256→{big_hidden}→5) trained with GWNMO and the coordinate M: "
        f"{1e3 * big_t:.0f} ms/step, support loss {losses[0]:.3f} → {losses[-1]:.3f} over 5 steps, peak RSS "
        f"{rss1 / 1024**2:.1f} GiB. The thesis MLP for it: *{refused}*",
    ]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    (out / "speed.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n".join(lines))
    real_sizes(args, device, out)


if __name__ == "__main__":
    main()
