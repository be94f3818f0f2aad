"""What a trained inner optimizer does per layer: the effective step ‖Δ‖/‖g‖ of every tensor at
every inner step, measured on meta-test tasks; and an SGD that replays it.

For each meta-trained cell given (its ``best.pt``), the inner loop is run on meta-test tasks with
a probe around each differentiable step: g = ∂(support loss)/∂φ_t per tensor and Δ = φ_{t+1} − φ_t.
For SGD with learned per-tensor step sizes the ratio is exactly its α; for GWNMO it is α times M's
per-tensor share of the normalised step, so the two read side by side.

``--replay CELL`` scores SGD from CELL's own init (its fixed init, or the init it meta-learned)
whose step size per tensor and inner step is the mean ratio measured on CELL, paired on the same
meta-test tasks as CELL's ``test.json``: if M only set per-layer step sizes, the replay matches it.

Usage:
    python benchmarks/study/steps.py CELL [CELL ...] [--tasks 100] [--replay CELL] --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from gwnmo_meta.suites.protocol_runner import TEST_SEED
from gwnmo_meta.training import inner_loops


class StepProbe:
    """Records ‖Δ‖/‖g‖ per tensor and inner step around ``inner_loops._step`` (per task)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[int, int], float] = defaultdict(float)
        self.counts: dict[tuple[int, int], int] = defaultdict(int)
        self._orig = inner_loops._step

    def __enter__(self) -> StepProbe:
        def probed(diffopt: Any, loss: torch.Tensor, x: torch.Tensor, first_order: bool) -> None:
            before = list(diffopt._fmodel.fast_params)
            grads = torch.autograd.grad(loss, before, retain_graph=True, allow_unused=True)
            self._orig(diffopt, loss, x, first_order)
            after = list(diffopt._fmodel.fast_params)
            step = getattr(diffopt, "_probe_step", 0)
            diffopt._probe_step = step + 1
            batched = x.dim() == 3  # [T, B, D]: fast weights carry a leading task dimension
            for i, (p0, p1, g) in enumerate(zip(before, after, grads, strict=True)):
                if g is None:
                    continue
                d, gg = (p1 - p0).detach(), g.detach()
                if batched:
                    dn, gn = d.flatten(1).norm(dim=1), gg.flatten(1).norm(dim=1)
                else:
                    dn, gn = d.norm().reshape(1), gg.norm().reshape(1)
                ok = gn > 0
                self.sums[(step, i)] += float((dn[ok] / gn[ok]).sum())
                self.counts[(step, i)] += int(ok.sum())

        inner_loops._step = probed
        return self

    def __exit__(self, *exc: Any) -> None:
        inner_loops._step = self._orig

    def table(self) -> list[list[float]]:
        """Mean ratio, [inner step][tensor]."""
        steps = 1 + max(s for s, _ in self.sums)
        tensors = 1 + max(i for _, i in self.sums)
        return [
            [self.sums[(s, i)] / max(self.counts[(s, i)], 1) for i in range(tensors)]
            for s in range(steps)
        ]


def tensor_names(cell: Path) -> list[str]:
    """The target's tensor names, in the inner loop's order."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.training.targets import Conv4Target

    cfg = RunConfig.load(cell / "config.json")
    return [n for n, _ in Conv4Target(cfg.ways, bias=cfg.conv_bias).named_parameters()]


def probe_cell(cell: Path, tasks: int, data_root: str | None) -> dict[str, Any]:
    """The effective-step table of a meta-trained cell, on the first ``tasks`` meta-test tasks."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint

    cfg = RunConfig.load(cell / "config.json")
    with StepProbe() as probe:
        ev = evaluate_checkpoint(
            cell / "best.pt",
            data_root=data_root,
            skip_integrity_check=True,
            tasks=tasks,
            device="cpu",
            seed=TEST_SEED + cfg.seed,
            progress=False,
        )
    return {
        "cell": cell.name,
        "tensors": tensor_names(cell),
        "ratio": probe.table(),
        "accuracy": ev["accuracy_mean"],
        "tasks": tasks,
    }


def replay(cell: Path, ratio: list[list[float]], data_root: str | None) -> dict[str, Any]:
    """SGD from ``cell``'s init (fixed or meta-learned) with α[step][tensor] = ``ratio``, on ``cell``'s meta-test
    tasks, paired with ``cell``'s own per-task accuracies."""
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.device import resolve_device
    from gwnmo_meta.evaluation.evaluate import _score
    from gwnmo_meta.evaluation.stats import paired_diff_ci95
    from gwnmo_meta.io.checkpoint import KIND_META, load_checkpoint
    from gwnmo_meta.optim.gwnmo import LearnedStepSize
    from gwnmo_meta.training.run_data import build_method_for, load_run_data

    src = RunConfig.load(cell / "config.json")
    test = json.loads((cell / "test.json").read_text())["eval"]
    cfg = src.replace(method="sgd", learn_lr="tensor-step", inner_lr=1.0, schedule=None)
    if data_root is not None:
        cfg.data_root = data_root
    cfg.validate()
    dev = resolve_device("cpu")
    data = load_run_data(cfg, dev, progress=False)
    method = build_method_for(cfg, data.feature_dim, dev)
    (steps,) = [m for m in method.modules() if isinstance(m, LearnedStepSize)]
    with torch.no_grad():
        steps.log_lr.copy_(torch.tensor(ratio).log())
    if src.learn_init:  # the init the cell meta-learned (its target's parameters)
        state = load_checkpoint(cell / "best.pt", KIND_META)["method"]
        init = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
        method.head.load_state_dict(init)
    ev = _score(
        method,
        data,
        cfg,
        tasks=test["tasks"],
        seed=TEST_SEED + src.seed,
        progress=False,
        dataset=cfg.dataset,
        checkpoint=None,
        device=dev,
    )
    if ev["tasks_digest"] != test["tasks_digest"]:
        raise SystemExit("the replay drew other meta-test tasks than the cell; not paired")
    d = paired_diff_ci95(ev["task_accuracies"], test["task_accuracies"])
    return {
        "cell": cell.name,
        "replay_accuracy": ev["accuracy_mean"],
        "replay_ci95": ev["accuracy_ci95"],
        "cell_accuracy": test["accuracy_mean"],
        "replay_minus_cell": d.mean,
        "ci95": d.ci95,
        "tasks": test["tasks"],
    }


def layer_groups(names: list[str]) -> dict[str, list[int]]:
    """Tensors grouped for the figure: each conv, all BatchNorm affine tensors, the head."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(names):
        key = "BatchNorm γ, β" if n.startswith("norms") else n.replace(".weight", "")
        groups[key.replace(".bias", " bias")].append(i)
    return dict(groups)


def write(results: list[dict[str, Any]], replays: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "steps.json").write_text(json.dumps({"cells": results, "replays": replays}, indent=1))
    lines = ["# Effective step ‖Δ‖/‖g‖ per tensor and inner step (meta-test tasks)", ""]
    for r in results:
        groups = layer_groups(r["tensors"])
        lines += [
            f"## {r['cell']} ({r['tasks']} tasks, accuracy {100 * r['accuracy']:.2f}%)",
            "",
            "| tensor | " + " | ".join(f"step {s + 1}" for s in range(len(r["ratio"]))) + " |",
            "|---|" + "---|" * len(r["ratio"]),
        ]
        for name, idx in groups.items():
            vals = [math.fsum(row[i] for i in idx) / len(idx) for row in r["ratio"]]
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
        lines.append("")
    for p in replays:
        lines += [
            f"Replay of {p['cell']}: SGD with its mean per-tensor, per-step effective steps "
            f"{100 * p['replay_accuracy']:.2f}% vs the cell's {100 * p['cell_accuracy']:.2f}%: "
            f"Δ {100 * p['replay_minus_cell']:+.2f} ± {100 * p['ci95']:.2f} points (paired, "
            f"{p['tasks']} tasks).",
            "",
        ]
    (out / "steps.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        for name, idx in layer_groups(r["tensors"]).items():
            vals = [math.fsum(row[i] for i in idx) / len(idx) for row in r["ratio"]]
            ax.plot(range(1, len(vals) + 1), vals, marker="o", label=name)
        ax.set_yscale("log")
        ax.set_title(r["cell"], fontsize=7)
        ax.set_xlabel("inner step")
        ax.set_ylabel("‖Δ‖ / ‖g‖")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "steps.png", dpi=120)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cells", nargs="+", type=Path)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--replay", type=Path, action="append", default=[])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    results = [probe_cell(c, args.tasks, args.data_root) for c in args.cells]
    by_name = {r["cell"]: r for r in results}
    replays = []
    for cell in args.replay:
        if cell.name not in by_name:
            by_name[cell.name] = probe_cell(cell, args.tasks, args.data_root)
        replays.append(replay(cell, by_name[cell.name]["ratio"], args.data_root))
    write(results, replays, args.out)


if __name__ == "__main__":
    main()
