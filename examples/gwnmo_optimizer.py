"""GWNMO with a meta-trained M as an ordinary torch optimizer, in a plain training loop.

``load_weighting`` takes M out of a ``meta-train`` checkpoint; ``GWNMO`` then trains any model
like SGD would, except that ``step`` takes the batch's features (M looks at them). Here a fresh
linear classifier is trained on MNIST features computed with the checkpoint's backbone, and
compared with plain SGD at the same step size.

Run (after ``examples/meta_train_api.py``, which writes the checkpoint)::

    python examples/gwnmo_optimizer.py runs/example-meta-train/best.pt --data-root DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gwnmo_meta import (
    GWNMO,
    FewShotConfig,
    RunConfig,
    load_weighting,
    prepare_fewshot,
    weighting_is_prime,
)


def train(model: nn.Module, opt: torch.optim.Optimizer, x, y, epochs: int, gwnmo: bool) -> None:
    """A plain mini-batch training loop; GWNMO's step also takes the batch features."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step(features=x[idx]) if gwnmo else opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="best.pt of a meta-train --method gwnmo run")
    parser.add_argument("--data-root", default=None, help="folder with MNIST (torchvision layout)")
    parser.add_argument("--lr", type=float, default=1.0, help="step size of GWNMO and of SGD")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    run = RunConfig.load(args.checkpoint.parent / "config.json")  # the run's settings
    data = prepare_fewshot(
        FewShotConfig(
            dataset=run.dataset,
            data_root=args.data_root,
            backbone=run.backbone,  # M was meta-trained on these features
            seed=run.seed,
            progress=False,
        )
    )
    x, y = data.features, data.labels
    is_test = data.is_test if data.is_test is not None else torch.zeros(len(y), dtype=torch.bool)
    x_train, y_train, x_test, y_test = x[~is_test], y[~is_test], x[is_test], y[is_test]
    classes = int(y.max()) + 1

    torch.manual_seed(0)
    model = nn.Linear(data.feature_dim, classes)
    weighting = load_weighting(args.checkpoint)
    opt = GWNMO(
        model.parameters(),
        weighting_net=weighting,
        lr=args.lr,
        normalize=not weighting_is_prime(args.checkpoint),
    )
    train(model, opt, x_train, y_train, args.epochs, gwnmo=True)

    torch.manual_seed(0)
    baseline = nn.Linear(data.feature_dim, classes)
    train(
        baseline,
        torch.optim.SGD(baseline.parameters(), lr=args.lr),
        x_train,
        y_train,
        args.epochs,
        gwnmo=False,
    )
    print(
        f"test accuracy after {args.epochs} epochs: GWNMO {accuracy(model, x_test, y_test):.3f}, "
        f"SGD {accuracy(baseline, x_test, y_test):.3f}"
    )


if __name__ == "__main__":
    main()
