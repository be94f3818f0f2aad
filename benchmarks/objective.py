"""GWNMO's meta-objective (issue 14): meta-train named variants on MNIST and record what they do.

For each variant (RunConfig overrides of a shared base): meta-train, then report meta-val by step,
meta-test accuracy of best.pt and last.pt on the same 600 tasks (paired), the learned init's bias
norm and the step diagnostics (bias share, ‖Δ_W‖/‖g_W‖, cos(Δ, g), participation ratio) averaged
over 100 meta-train tasks before and after meta-training. Resumable: finished variants are read
back from OUT/<name>/summary.json.

    GWNMO_DATA=/work/shared/data OMP_NUM_THREADS=1 nice -n 10 \\
        .venv/bin/python benchmarks/objective.py loophole --out benchmarks/objective/loophole
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from gwnmo_meta.checkpoint import KIND_META, load_checkpoint
from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluate import evaluate_checkpoint
from gwnmo_meta.run_data import build_method_for, load_run_data, task_spec
from gwnmo_meta.trainer import meta_train

BASE = dict(dataset="mnist", ways=5, shots=1, seed=0, val_every=100, device="cpu")
STATS = ("bias_share", "step_ratio_weight", "step_ratio_bias", "cos_delta_g", "effective_coords")

SUITES: dict[str, dict[str, dict[str, Any]]] = {
    # the quick setting: learned init, 300 meta-steps, each way of closing the loophole
    "loophole": {
        f"{sched}-{name}": dict(meta_steps=300, schedule=sched, **kw)
        for sched in ("unrolled", "alg2")
        for name, kw in {
            "through-norm": dict(grad_through_norm=True),
            "norm-const": {},
            "first-order": dict(first_order=True),
            "fixed-init": dict(learn_init=False),
        }.items()
    },
    # the Done-when command and its reference (600 meta-steps, default flags)
    "done-when": {
        "gwnmo-default": dict(meta_steps=600),
        "sgd-fixed-init": dict(meta_steps=600, method="sgd", learn_init=False),
    },
}


def _diagnostics(method: Any, data: Any, cfg: RunConfig) -> dict[str, float]:
    sampler = data.sampler("train", task_spec(cfg), 4321, "cpu")
    _, outs = method.episodes([sampler.sample() for _ in range(100)], train=False)
    out = {k: sum(o.stats[k] for o in outs) / len(outs) for k in STATS if k in outs[0].stats}
    bias = [p for n, p in method.head.named_parameters() if n.endswith("bias")]
    out["init_bias_norm"] = float(torch.cat([b.detach().reshape(-1) for b in bias]).norm())
    out["train_query_acc"] = sum(o.query_acc for o in outs) / len(outs)
    return out


def run_variant(name: str, overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    run_dir = out / name
    done = run_dir / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = RunConfig(**{**BASE, **overrides})
    data = load_run_data(cfg, torch.device("cpu"), progress=False)
    torch.manual_seed(cfg.seed)
    before = _diagnostics(build_method_for(cfg, data.feature_dim, "cpu"), data, cfg)
    result = meta_train(cfg, run_dir, resume=(run_dir / "last.pt").exists(), progress=False)
    method = build_method_for(cfg, data.feature_dim, "cpu")
    method.load_state_dict(load_checkpoint(run_dir / "last.pt", KIND_META)["method"])
    after = _diagnostics(method, data, cfg)
    tests = {
        which: evaluate_checkpoint(run_dir / f"{which}.pt", tasks=600, device="cpu", progress=False)
        for which in ("best", "last")
    }
    summary = {
        "name": name,
        "config": dataclasses.asdict(cfg),
        "val_history": [
            (int(r["step"]), r["val_accuracy"]) for r in result.history if "val_accuracy" in r
        ],
        "best_val": result.best_val_accuracy,
        "before": before,
        "after": after,
        "test": {
            k: {"acc": v["accuracy_mean"], "ci95": v["accuracy_ci95"]} for k, v in tests.items()
        },
    }
    done.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| variant | meta-val by step (%) | test best.pt | test last.pt | init bias norm "
        "| bias share | ‖Δ_W‖/‖g_W‖ | cos(Δ,g) | eff. coords |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        a, b = r["after"], r["before"]
        vals = ", ".join(f"{s}: {100 * v:.1f}" for s, v in r["val_history"])

        def arrow(k: str, a: dict = a, b: dict = b) -> str:
            return f"{b[k]:.2f} → {a[k]:.2f}" if k in a else "–"

        t = r["test"]
        lines.append(
            f"| {r['name']} | {vals} | {100 * t['best']['acc']:.2f} ± {100 * t['best']['ci95']:.2f} "
            f"| {100 * t['last']['acc']:.2f} ± {100 * t['last']['ci95']:.2f} "
            f"| {arrow('init_bias_norm')} | {arrow('bias_share')} | {arrow('step_ratio_weight')} "
            f"| {arrow('cos_delta_g')} | {arrow('effective_coords')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default=None, help="comma list of variant names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = SUITES[args.suite]
    names = args.only.split(",") if args.only else list(variants)
    rows = []
    for name in names:
        rows.append(run_variant(name, variants[name], args.out))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    (args.out / "results.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
