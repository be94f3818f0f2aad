"""Does the factored M lose accuracy? GWNMO with --weighting factored vs coordinate, paired on the same tasks.

    GWNMO_DATA=/work/shared/data .venv/bin/python benchmarks/factored_accuracy.py \
        [--dataset mnist] [--shots 1] [--meta-steps 200] [--tasks 600] [--out benchmarks/endtoend]

Meta-trains GWNMO (alg2, linear head on cached conv4 features, defaults otherwise) once per
weighting with the same seed and task stream, evaluates each best.pt on the same meta-test tasks,
and reports both accuracies and the paired difference (factored − coordinate) with its 95% CI
(Student t over the per-task differences). Resumable: finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gwnmo_meta.config import RunConfig
from gwnmo_meta.evaluation.evaluate import evaluate_checkpoint
from gwnmo_meta.evaluation.stats import mean_ci95
from gwnmo_meta.io.checkpoint import KIND_META, load_checkpoint
from gwnmo_meta.training.trainer import meta_train

WEIGHTINGS = ("coordinate", "factored")


def per_task_accuracy(run: Path, tasks: int, seed: int) -> list[float]:
    """Query accuracy of ``run``'s best.pt on each of ``tasks`` meta-test tasks (seeded stream)."""
    cfg = RunConfig.from_dict(load_checkpoint(run / "best.pt", KIND_META)["config"])
    ev = evaluate_checkpoint(
        run / "best.pt",
        data_root=cfg.data_root,
        skip_integrity_check=cfg.skip_integrity_check,
        tasks=tasks,
        device="cpu",
        seed=seed,
        progress=False,
    )
    return ev["task_accuracies"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--meta-steps", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=600)
    ap.add_argument("--head-hidden", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/endtoend")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    tag = f"{args.dataset}-{args.shots}shot-steps{args.meta_steps}" + (
        f"-h{args.head_hidden}" if args.head_hidden else ""
    )
    accs = {}
    for w in WEIGHTINGS:
        run = out / "runs" / f"{tag}-{w}"
        if not (run / "best.pt").exists() or not (run / "done").exists():
            cfg = RunConfig(
                dataset=args.dataset,
                shots=args.shots,
                method="gwnmo",
                weighting=w,
                head_hidden=args.head_hidden,
                meta_steps=args.meta_steps,
                val_every=max(1, args.meta_steps // 4),
                val_tasks=200,
                device="cpu",
            )
            meta_train(cfg, run, resume=(run / "last.pt").exists(), progress=False)
            (run / "done").write_text("ok\n")
        accs[w] = per_task_accuracy(run, args.tasks, seed=1234)
    diff = [f - c for f, c in zip(accs["factored"], accs["coordinate"], strict=True)]
    res = {
        "command": "benchmarks/factored_accuracy.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        **{w: vars(mean_ci95(a)) for w, a in accs.items()},
        "factored_minus_coordinate": vars(mean_ci95(diff)),
        "per_task": accs,
    }
    (out / f"factored-vs-coordinate-{tag}.json").write_text(json.dumps(res, indent=2) + "\n")
    for k in (*WEIGHTINGS, "factored_minus_coordinate"):
        print(f"{k}: {100 * res[k]['mean']:.2f} ± {100 * res[k]['ci95']:.2f}")


if __name__ == "__main__":
    main()
