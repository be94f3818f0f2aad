"""Meta-train GWNMO from Python with ``RunConfig`` and ``meta_train``, then evaluate the checkpoint.

Everything the ``gwnmo-meta meta-train`` command does, as three calls. The settings here are
tiny so that the script finishes in seconds on raw pixels (``backbone="none"``); for real runs
use the defaults (``backbone="conv4"``, ``meta_steps=1000``, ...; see docs/CLI.md).

Run::

    python examples/meta_train_api.py --data-root DIR [--out runs/example-meta-train]

``DIR`` holds MNIST in torchvision's layout (default: ``$GWNMO_DATA``, else
``~/.cache/gwnmo-meta/data``; add ``--download`` to fetch it). The run directory gets
``best.pt``, which ``examples/gwnmo_optimizer.py`` then uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gwnmo_meta import RunConfig, evaluate_checkpoint, meta_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None, help="folder with MNIST (torchvision layout)")
    parser.add_argument("--download", action="store_true", help="let torchvision download MNIST")
    parser.add_argument("--out", type=Path, default=Path("runs/example-meta-train"))
    args = parser.parse_args()

    cfg = RunConfig(
        dataset="mnist",
        data_root=args.data_root,
        download=args.download,
        backbone="none",  # raw pixels: no backbone pre-training, seconds on a CPU
        method="gwnmo",
        weighting="coordinate",
        ways=5,
        shots=1,
        query=3,
        inner_steps=2,
        meta_batch=2,
        meta_steps=6,
        val_every=3,
        val_tasks=10,
        device="cpu",
    )
    resume = (args.out / "last.pt").exists()  # a second run continues the first one
    result = meta_train(cfg, args.out, resume=resume, progress=False)
    print(
        f"meta-trained {result.steps_done} steps; "
        f"best meta-val accuracy {result.best_val_accuracy:.3f}; run dir {args.out}"
    )
    summary = evaluate_checkpoint(args.out / "best.pt", tasks=20, device="cpu", progress=False)
    print(f"meta-test on {summary['dataset']}: {summary['text']}")


if __name__ == "__main__":
    main()
