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

from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint
from gwnmo_meta.evaluation.stats import mean_ci95
from gwnmo_meta.io.checkpoint import KIND_META, load_checkpoint
from gwnmo_meta.training.run_data import build_method_for, load_run_data, task_spec
from gwnmo_meta.training.trainer import meta_train

TEST_TASKS, TEST_SEED = 600, 1234  # evaluate's defaults: every variant sees the same test tasks

BASE = dict(
    dataset="mnist", ways=5, shots=1, seed=0, val_every=100, device="cpu", weighting="coordinate"
)
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
    # baselines and GWNMO options, same tasks as the loophole suite (paired with --also)
    "compare": {
        "maml": dict(meta_steps=300, method="maml"),
        "meta-sgd": dict(meta_steps=300, method="meta-sgd"),
        "adam-fixed-init": dict(meta_steps=300, method="adam", learn_init=False),
        "alg2-learn-lr-global": dict(meta_steps=300, learn_lr="global"),
        "alg1-norm-const": dict(meta_steps=300, schedule="alg1"),
        "alg2-learn-lr-tensor": dict(meta_steps=300, learn_lr="tensor"),
        "alg2-default": dict(meta_steps=300),
        "sgd-fixed-init": dict(meta_steps=300, method="sgd", learn_init=False),
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
    head = method.head if hasattr(method, "head") else method.learner.module  # learn2learn
    bias = [p for n, p in head.named_parameters() if n.endswith("bias")]
    out["init_bias_norm"] = float(torch.cat([b.detach().reshape(-1) for b in bias]).norm())
    out["train_query_acc"] = sum(o.query_acc for o in outs) / len(outs)
    return out


def _load(run_dir: Path, which: str, cfg: RunConfig, data: Any) -> Any:
    method = build_method_for(cfg, data.feature_dim, "cpu")
    method.load_state_dict(load_checkpoint(run_dir / f"{which}.pt", KIND_META)["method"])
    return method


def test_accuracies(run_dir: Path, which: str, cfg: RunConfig) -> list[float]:
    """Per-task query accuracy of ``which``.pt on the fixed meta-test stream (paired across variants)."""
    ev = evaluate_checkpoint(
        run_dir / f"{which}.pt",
        data_root=cfg.data_root,
        skip_integrity_check=cfg.skip_integrity_check,
        tasks=TEST_TASKS,
        device="cpu",
        seed=TEST_SEED,
        progress=False,
    )
    return ev["task_accuracies"]


def _with_per_task(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Add per-task meta-test accuracies of best.pt and last.pt to a summary that lacks them."""
    if "test_per_task" in summary:
        return summary
    cfg = RunConfig(**summary["config"]).validate()
    summary["test_per_task"] = {w: test_accuracies(run_dir, w, cfg) for w in ("best", "last")}
    for w, accs in summary["test_per_task"].items():
        ci = mean_ci95(accs)
        summary["test"][w] = {"acc": ci.mean, "ci95": ci.ci95}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_variant(name: str, overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    run_dir = out / name
    done = run_dir / "summary.json"
    if done.exists():
        return _with_per_task(json.loads(done.read_text()), run_dir)
    cfg = RunConfig(**{**BASE, **overrides}).validate()
    data = load_run_data(cfg, torch.device("cpu"), progress=False)
    torch.manual_seed(cfg.seed)
    before = _diagnostics(build_method_for(cfg, data.feature_dim, "cpu"), data, cfg)
    result = meta_train(cfg, run_dir, resume=(run_dir / "last.pt").exists(), progress=False)
    after = _diagnostics(_load(run_dir, "last", cfg, data), data, cfg)
    per_task = {w: test_accuracies(run_dir, w, cfg) for w in ("best", "last")}
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
            w: {"acc": mean_ci95(a).mean, "ci95": mean_ci95(a).ci95} for w, a in per_task.items()
        },
        "test_per_task": per_task,
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


def paired(rows: list[dict[str, Any]], reference: str, which: str = "best") -> str:
    """Paired meta-test differences (same tasks) of every variant against ``reference``."""
    ref = next(r for r in rows if r["name"] == reference)["test_per_task"]["best"]
    lines = [f"| variant ({which}.pt) − {reference} (best.pt) | Δ accuracy (points, 95% CI) |"]
    lines.append("|---|---|")
    for r in rows:
        if r["name"] != reference:
            d = mean_ci95([a - b for a, b in zip(r["test_per_task"][which], ref, strict=True)])
            lines.append(f"| {r['name']} | {100 * d.mean:+.2f} ± {100 * d.ci95:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default=None, help="comma list of variant names")
    parser.add_argument(
        "--reference", default=None, help="comma list of variants for paired differences"
    )
    parser.add_argument(
        "--also", default="", help="comma list of other suites' output folders to tabulate too"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = SUITES[args.suite]
    names = args.only.split(",") if args.only else list(variants)
    rows = []
    for name in names:
        rows.append(run_variant(name, variants[name], args.out))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    for folder in filter(None, args.also.split(",")):
        for path in sorted(Path(folder).glob("*/summary.json")):
            rows.append(_with_per_task(json.loads(path.read_text()), path.parent))
    text = table(rows)
    for ref in filter(None, (args.reference or "").split(",")):
        text += "\n\n" + paired(rows, ref, "best") + "\n\n" + paired(rows, ref, "last")
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
