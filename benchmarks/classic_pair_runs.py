"""Pair two folders of classic-table runs by file name: test accuracy at the best-validation epoch.

    .venv/bin/python benchmarks/classic_pair_runs.py OLD_DIR NEW_DIR [--pattern '*gwnmo.factored*']

For a change that should not move results beyond float rounding (e.g. a re-implemented step), this
prints each run whose score moved, and the mean difference (new − old) with its 95% t-interval over
the paired runs, overall and per step size α.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from gwnmo_meta.evaluation.stats import mean_ci95


def score(path: Path) -> float:
    return 100 * json.loads(path.read_text(encoding="utf-8"))["test_accuracy_at_best_val"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--pattern", default="*.json")
    args = ap.parse_args()
    pairs = [
        (p.name, score(p), score(args.new / p.name))
        for p in sorted(args.old.glob(args.pattern))
        if (args.new / p.name).exists()
    ]
    if not pairs:
        raise SystemExit("error: no run file is in both folders")
    by_lr: dict[str, list[float]] = defaultdict(list)
    for name, old, new in pairs:
        if new != old:
            print(f"{name}: {old:.2f} → {new:.2f} ({new - old:+.2f})")
        lr = re.search(r"-lr([0-9.e-]+)-e", name)
        by_lr[lr.group(1) if lr else "?"].append(new - old)
    diffs = [new - old for _, old, new in pairs]
    same = sum(d == 0 for d in diffs)
    ci = mean_ci95(diffs)
    print(
        f"{len(pairs)} paired runs, {same} identical: new − old {ci.mean:+.2f} ± {ci.ci95:.2f} points"
    )
    for lr, ds in sorted(by_lr.items(), key=lambda kv: float(kv[0]) if kv[0] != "?" else 0.0):
        c = mean_ci95(ds)
        spread = f"range {min(ds):+.2f} to {max(ds):+.2f}"
        print(
            f"  α {lr}: {len(ds)} runs, {c.mean:+.2f} ± {c.ci95:.2f} ({spread}, "
            f"median {statistics.median(ds):+.2f})"
        )


if __name__ == "__main__":
    main()
