"""Compact Markdown pivots of a suite's results.csv (the tables quoted in BENCHMARKS.md).

python benchmarks/pivot.py benchmarks/main/results.csv      # methods × (dataset, shots)
python benchmarks/pivot.py benchmarks/transfer/results.csv  # (method, source) × target
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

ORDER = [
    "gwnmo alg1",
    "gwnmo alg2",
    "gwnmo-prime alg1",
    "gwnmo-prime alg2",
    "maml",
    "meta-sgd",
    "hg",
    "sgd",
    "adam",
]
DATASETS = ["mnist", "fmnist", "cifar10"]


def cell(r: dict) -> str:
    return (
        f"{100 * float(r['accuracy_mean']):.2f} ± {100 * float(r['accuracy_ci95']):.2f} "
        f"({float(r['loss_mean']):.2f})"
    )


def main(path: str) -> None:
    rows = list(csv.DictReader(open(path)))
    transfer = any(r["train_dataset"] != r["test_dataset"] for r in rows)
    table: dict = defaultdict(dict)
    if transfer:
        cols = [t for t in DATASETS if any(r["test_dataset"] == t for r in rows)]
        for r in rows:
            table[(r["variant"], r["train_dataset"])][r["test_dataset"]] = cell(r)
        print("| method | meta-trained on | " + " | ".join(f"→ {c}" for c in cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for v in ORDER:
            for src in DATASETS:
                if (v, src) in table:
                    print(
                        f"| {v} | {src} | "
                        + " | ".join(table[(v, src)].get(c, "") for c in cols)
                        + " |"
                    )
    else:
        cols = [
            (d, s)
            for d in DATASETS
            for s in ("1", "5")
            if any(r["train_dataset"] == d and r["shots"] == s for r in rows)
        ]
        for r in rows:
            table[r["variant"]][(r["train_dataset"], r["shots"])] = (
                cell(r) + f" α={float(r['inner_lr']):g}"
            )
        print("| method | " + " | ".join(f"{d} {s}-shot" for d, s in cols) + " |")
        print("|---|" + "---|" * len(cols))
        for v in ORDER:
            if v in table:
                print(f"| {v} | " + " | ".join(table[v].get(c, "") for c in cols) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
