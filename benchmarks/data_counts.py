"""Image counts per meta-train / meta-val / meta-test part for the default split of each dataset.

    python benchmarks/data_counts.py --data-root DIR [--skip-integrity-check]

Writes ``benchmarks/data_counts.md`` (the counts stated next to every benchmark table).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gwnmo_meta.tasks.fewshot import FewShotConfig, prepare_fewshot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--skip-integrity-check", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/data_counts.md"))
    args = ap.parse_args()
    lines = [
        "| dataset | images (torchvision train + test) | meta-train (classes 0-4) | meta-val (20% of 0-4) | "
        "meta-test (classes 5-9) | fewest images of a class, per part |",
        "|---|---|---|---|---|---|",
    ]
    for ds in ("mnist", "fmnist", "cifar10"):
        data = prepare_fewshot(
            FewShotConfig(
                dataset=ds,
                data_root=args.data_root,
                progress=False,
                skip_integrity_check=args.skip_integrity_check,
            )
        )
        n = {p: len(idx) for p, idx in data.indices.items()}
        fewest = []
        for p, idx in data.indices.items():
            counts = torch.bincount(data.labels[idx], minlength=10)
            fewest.append(f"{p} {int(counts[counts > 0].min())}")
        lines.append(
            f"| {ds} | {len(data.labels):,} ({int((~data.is_test).sum()):,} + {int(data.is_test.sum()):,}) | "
            f"{n['train']:,} | {n['val']:,} | {n['test']:,} | {', '.join(fewest)} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
