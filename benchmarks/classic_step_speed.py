"""Classic training's per-epoch cost: GWNMO against Adam and SGD, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/classic_step_speed.py --out benchmarks/speed
    # → benchmarks/speed/classic-step.{md,json}

One "epoch" is the mini-batch loop of ``gwnmo-meta train`` (batch 64) over N synthetic,
L2-normalised feature rows of the conv4 width, with the thesis's two-layer target (``--hidden``
64, the default, and 512, a target of over 100k parameters). Each learner is built as ``train``
builds it (``make_target``, ``make_weighting``, ``OnlineGWNMO`` / ``TorchLearner``). The
learners run one epoch each in turn, repeated; the table gives each one's median epoch time and
its ratio to Adam's (paired by repeat, so the machine's drift cancels in the ratio). The
"before" rows are the step as it was before two savings, each bit for bit the same arithmetic: the
judge and the next gradient now share one target forward and backward, and M's Adam runs as one
``foreach`` update instead of a loop over tensors. The "per-coordinate step" row runs the factored
M through its per-coordinate output and ``gwnmo_direction`` instead of the fused row step (the same
maths, to float rounding). "M's Adam update alone" times only M's optimizer step (on fixed
gradients) once per batch: a floor under any GWNMO step with that M, whatever the rest costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gwnmo_meta.training.classic import ClassicConfig
from gwnmo_meta.training.classic_learners import (
    OnlineGWNMO,
    TorchLearner,
    make_target,
    make_weighting,
)

FEATURE_DIM, CLASSES, BATCH = 256, 10, 64
LEARNERS = {  # label → ClassicConfig fields
    "sgd": dict(optimizer="sgd"),
    "adam": dict(optimizer="adam"),
    "gwnmo mlp alg1": dict(optimizer="gwnmo", weighting="mlp", schedule="alg1"),
    "gwnmo mlp alg1, before": dict(optimizer="gwnmo", weighting="mlp", schedule="alg1"),
    "thesis M's Adam update alone": dict(optimizer="gwnmo", weighting="mlp", schedule="alg1"),
    "gwnmo factored alg1, before": dict(optimizer="gwnmo", weighting="factored", schedule="alg1"),
    "gwnmo factored alg1, per-coordinate step": dict(
        optimizer="gwnmo", weighting="factored", schedule="alg1"
    ),
    "gwnmo factored alg1": dict(optimizer="gwnmo", weighting="factored", schedule="alg1"),
    "gwnmo factored alg2": dict(optimizer="gwnmo", weighting="factored", schedule="alg2"),
}


class Before(OnlineGWNMO):
    """The step before the shared forward: the judge and the next gradient each run the target."""

    def _judge(self, x, y):
        if self.meta_opt is None or self.snapshot is None:
            return None, self._grads(self.params, x, y)
        loss = self._loss(self.params, x, y)
        keys = [n for n, p in self.snapshot.items() if p.requires_grad]
        grads = torch.autograd.grad(loss, [self.snapshot[n] for n in keys], allow_unused=True)
        by_name = dict(zip(keys, grads, strict=True))
        judged = [by_name.get(n) for n, _ in self.weighting.named_parameters()]
        return judged, self._grads(self.params, x, y)


class MetaAdamOnly:
    """Only M's optimizer step, once per batch, on fixed gradients (no target, no M forward)."""

    def __init__(self, weighting: torch.nn.Module, meta_opt: torch.optim.Optimizer):
        gen = torch.Generator().manual_seed(0)
        for p in weighting.parameters():
            p.grad = 1e-3 * torch.randn(p.shape, generator=gen)
        self.meta_opt = meta_opt

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.meta_opt.step()
        return 0.0


def build(label: str, hidden: int) -> OnlineGWNMO | TorchLearner | MetaAdamOnly:
    torch.manual_seed(0)
    cfg = ClassicConfig(hidden=hidden, **LEARNERS[label]).validate()
    target = make_target(FEATURE_DIM, hidden, CLASSES)
    if not cfg.info.learned_optimizer:
        return TorchLearner(target, cfg)
    weighting, meta_opt = make_weighting(cfg, target, FEATURE_DIM, torch.device("cpu"))
    assert meta_opt is not None
    if label.endswith("alone"):
        return MetaAdamOnly(weighting, meta_opt)
    if label.endswith("before"):  # and M's Adam as it was: a loop over tensors
        meta_opt = torch.optim.Adam(weighting.parameters(), lr=cfg.meta_lr, foreach=False)
        learner = Before(target, weighting, cfg, meta_opt)
    else:
        learner = OnlineGWNMO(target, weighting, cfg, meta_opt)
    if label.endswith("before") or label.endswith("per-coordinate step"):
        learner._fused = None  # the factored M through M's per-coordinate output
    return learner


def epoch_seconds(
    learner: OnlineGWNMO | TorchLearner | MetaAdamOnly, x: torch.Tensor, y: torch.Tensor
) -> float:
    start = time.perf_counter()
    for i in range(0, len(x), BATCH):
        learner.step(x[i : i + BATCH], y[i : i + BATCH])
    return time.perf_counter() - start


def measure(hidden: int, rows: int, repeats: int) -> dict[str, list[float]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(rows, FEATURE_DIM, generator=gen), dim=1)
    y = torch.randint(0, CLASSES, (rows,), generator=gen)
    learners = {label: build(label, hidden) for label in LEARNERS}
    for learner in learners.values():  # warm-up epoch, not timed
        epoch_seconds(learner, x, y)
    times: dict[str, list[float]] = {label: [] for label in LEARNERS}
    for r in range(repeats):
        order = list(LEARNERS)[r % len(LEARNERS) :] + list(LEARNERS)[: r % len(LEARNERS)]
        for label in order:
            times[label].append(epoch_seconds(learners[label], x, y))
    return times


def table(results: dict[int, dict[str, list[float]]], rows: int, repeats: int) -> str:
    lines = [
        f"Per-epoch time of `train`'s mini-batch loop ({rows} rows, batch {BATCH}, "
        f"{FEATURE_DIM}-wide features, {repeats} interleaved repeats, one thread).",
        "",
        "| target | learner | median epoch (s) | × Adam (median of paired ratios) |",
        "|---|---|---|---|",
    ]
    for hidden, times in results.items():
        params = (FEATURE_DIM + 1) * hidden + (hidden + 1) * CLASSES
        for label, ts in times.items():
            ratio = statistics.median(t / a for t, a in zip(ts, times["adam"], strict=True))
            lines.append(
                f"| 2-layer, hidden {hidden} ({params:,} params) | {label} | "
                f"{statistics.median(ts):.3f} | {ratio:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", default="64,512")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {h: measure(h, args.rows, args.repeats) for h in map(int, args.hidden.split(","))}
    text = table(results, args.rows, args.repeats)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "classic-step.md").write_text(text)
        payload = {"rows": args.rows, "repeats": args.repeats, "seconds": results}
        (args.out / "classic-step.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
