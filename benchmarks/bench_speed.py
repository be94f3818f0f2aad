"""Speed and cost of GWNMO vs learn2learn MAML / Meta-SGD, side by side in one run.

    .venv/bin/python benchmarks/bench_speed.py [--device cpu|cuda] [--out benchmarks/speed]

Measures, on identical episodes (5-way 1-shot 15-query, 256-dim unit-norm features like conv4's,
linear head, meta-batch 4, 5 inner steps unless stated):

1. task sampling from cached features (tasks/s) and its share of one GWNMO meta-step;
2. meta-step time of GWNMO (coordinate/mlp M, alg1/alg2), MAML, Meta-SGD, SGD-with-learned-init,
   and each one's ratio to MAML;
3. how step time grows with the number of inner steps and with the target's size;
4. scale: the per-coordinate M's size vs the thesis MLP's for growing targets, a >=1M-parameter
   target meta-trained with the coordinate M, and a ~17M-parameter target trained with GWNMO
   (torch optimizer) where the thesis MLP is refused (> 24 GiB of training state).

Timings are medians over repeats after warm-up; they are ratios measured in the same process.
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
from gwnmo_meta.methods import MethodConfig, build_method
from gwnmo_meta.nets import CoordinateWeighting, ThesisMLPWeighting, build_weighting, make_head
from gwnmo_meta.optim import GWNMO
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import FewShotData
from gwnmo_meta.tasks.splits import default_split, split_indices


def fake_features(dim: int = 256, per_class: int = 600, classes: int = 10, seed: int = 0) -> FewShotData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    feats = F.normalize(torch.randn(classes, dim, generator=g)[labels] + torch.randn(len(labels), dim, generator=g), dim=1)
    parts = split_indices(labels, torch.zeros(len(labels), dtype=torch.bool), default_split(classes))
    return FewShotData(feats, labels, parts, default_split(classes), "synthetic-256")


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
    opt = method.make_meta_optimizer()

    def step():
        opt.zero_grad(set_to_none=True)
        for _ in range(meta_batch):
            out = method.episode(sampler.sample(), train=True)
            (out.meta_loss / meta_batch).backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/speed")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = fake_features()
    spec = TaskSpec(5, 1, 15)
    results: dict = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cpu": platform.processor() or platform.machine()}
    lines = [f"# Speed and cost (device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads)", ""]

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

    # 2. meta-step times
    variants = [
        ("gwnmo coordinate alg2", dict(method="gwnmo", weighting="coordinate", schedule="alg2")),
        ("gwnmo coordinate alg1", dict(method="gwnmo", weighting="coordinate", schedule="alg1")),
        ("gwnmo mlp alg2", dict(method="gwnmo", weighting="mlp", schedule="alg2")),
        ("gwnmo-prime coordinate alg2", dict(method="gwnmo-prime", weighting="coordinate", schedule="alg2")),
        ("maml (learn2learn)", dict(method="maml")),
        ("meta-sgd (learn2learn)", dict(method="meta-sgd")),
        ("sgd, learned init (higher)", dict(method="sgd")),
    ]
    step_times = {}
    for name, kw in variants:
        m = build_method(MethodConfig(inner_steps=5, **kw), data.feature_dim, 5, device)
        step_times[name] = time_it(meta_step_fn(m, sampler, 4), device, args.repeats)
    maml = step_times["maml (learn2learn)"]
    results["meta_step_seconds"] = step_times
    lines += [
        f"Task sampling: **{results['sampling_tasks_per_s']:.0f} tasks/s** "
        f"({1e6 * sample_s:.0f} µs/task; 4 tasks = {100 * 4 * sample_s / step_times['gwnmo coordinate alg2']:.2f}% "
        "of one GWNMO meta-step).", "",
        "Meta-step (4 tasks × 5 inner steps, 5-way 1-shot 15-query, 256-dim features, linear head):", "",
        "| method | step (ms) | tasks/s | × MAML |", "|---|---|---|---|",
    ]
    for name, t in step_times.items():
        lines.append(f"| {name} | {1e3 * t:.1f} | {4 / t:.0f} | {t / maml:.2f} |")

    # 3. growth with inner steps and target size
    lines += ["", "Step time vs inner steps (ms):", "", "| inner steps | gwnmo coordinate alg2 | maml | ratio |", "|---|---|---|---|"]
    results["inner_steps_scaling"] = {}
    for k in (1, 5, 10, 20):
        g = build_method(MethodConfig(method="gwnmo", inner_steps=k), data.feature_dim, 5, device)
        mm = build_method(MethodConfig(method="maml", inner_steps=k), data.feature_dim, 5, device)
        tg = time_it(meta_step_fn(g, sampler, 4), device, max(5, args.repeats // 2))
        tm = time_it(meta_step_fn(mm, sampler, 4), device, max(5, args.repeats // 2))
        results["inner_steps_scaling"][k] = {"gwnmo": tg, "maml": tm}
        lines.append(f"| {k} | {1e3 * tg:.1f} | {1e3 * tm:.1f} | {tg / tm:.2f} |")
    lines += ["", "Step time vs target size (two-layer head 256→H→5, 5 inner steps; ms):", "",
              "| H | target params | gwnmo coordinate | gwnmo coordinate, M hidden 8 | gwnmo mlp | maml | coordinate/maml | hidden-8/maml |",
              "|---|---|---|---|---|---|---|---|"]
    results["target_scaling"] = {}
    for hidden in (None, 64, 512, 4096):
        params = sum(p.numel() for p in make_head(256, 5, hidden).parameters())
        row = {}
        for label, kw in (("coordinate", dict(method="gwnmo", weighting="coordinate")),
                          ("coordinate_h8", dict(method="gwnmo", weighting="coordinate", weighting_hidden=8)),
                          ("mlp", dict(method="gwnmo", weighting="mlp")), ("maml", dict(method="maml"))):
            try:
                m = build_method(MethodConfig(inner_steps=5, head_hidden=hidden, **kw), 256, 5, device)
                row[label] = time_it(meta_step_fn(m, sampler, 4), device, 5, warmup=1)
            except (ConfigError, RuntimeError) as exc:
                row[label] = None
                row[label + "_error"] = str(exc)[:120]
        results["target_scaling"][params] = row
        fmt = lambda v: "n/a" if v is None else f"{1e3 * v:.1f}"  # noqa: E731
        ratio = lambda k: "n/a" if not row.get(k) or not row.get("maml") else f"{row[k] / row['maml']:.2f}"  # noqa: E731
        lines.append(f"| {hidden or '-'} | {params:,} | {fmt(row.get('coordinate'))} | {fmt(row.get('coordinate_h8'))} | "
                     f"{fmt(row.get('mlp'))} | {fmt(row.get('maml'))} | {ratio('coordinate')} | {ratio('coordinate_h8')} |")

    # 4. scale: sizes of M, a 17M-parameter target trained with GWNMO
    lines += ["", "Size of M (parameters; thesis MLP with hidden 32) for growing targets:", "",
              "| target params | coordinate M | thesis MLP M | thesis MLP training state (GiB, fp32 weights+grads+Adam) |", "|---|---|---|---|"]
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
    results["big_target"] = {"params": big_params, "step_seconds": big_t, "losses": losses, "mlp_refused": refused,
                             "max_rss_gib_after": rss1 / 1024**2, "max_rss_gib_before": rss0 / 1024**2}
    lines += ["", f"A {big_params:,}-parameter target (256→{big_hidden}→5) trained with GWNMO and the coordinate M: "
              f"{1e3 * big_t:.0f} ms/step, support loss {losses[0]:.3f} → {losses[-1]:.3f} over 5 steps, peak RSS "
              f"{rss1 / 1024**2:.1f} GiB. The thesis MLP for it: *{refused}*"]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    (out / "speed.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
