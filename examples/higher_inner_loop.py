"""GWNMO as a differentiable optimizer in your own ``higher.innerloop_ctx`` loop.

Your model is an ordinary ``nn.Module``; GWNMO is an ordinary ``torch.optim.Optimizer`` whose
step is shaped by a weighting network M. higher turns it into a differentiable optimizer, so the
query loss after a few inner steps back-propagates through every update into M's parameters:
that is meta-training M, written by hand in a dozen lines.

Run: ``python examples/higher_inner_loop.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import higher
import torch
import torch.nn.functional as F
from torch import nn

from gwnmo_meta import GWNMO, CoordinateWeighting

INFORMATIVE, NOISE, CLASSES, INNER_STEPS = 4, 12, 4, 3
FEATURES = INFORMATIVE + NOISE


class SmallNet(nn.Module):
    """The user's own model: any nn.Module works."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(FEATURES, 32)
        self.out = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def sample_task(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A 4-class problem: 4 informative features and 12 loud, class-independent noise features.

    Plain gradient steps are misled by the noise; a learned weighting can turn it down.
    Returns 20 support and 20 query points (5 per class each).
    """
    centers = torch.randn(CLASSES, INFORMATIVE, generator=gen)
    y = torch.arange(CLASSES).repeat(10)
    signal = centers[y] + 0.3 * torch.randn(len(y), INFORMATIVE, generator=gen)
    noise = 3.0 * torch.randn(len(y), NOISE, generator=gen)
    x = torch.cat([signal, noise], 1)
    return x[:20], y[:20], x[20:], y[20:]


def query_loss_after_adaptation(model, inner_opt, task, train: bool) -> torch.Tensor:
    """Adapt a copy of ``model`` on the support set; the query loss, differentiable in M if ``train``."""
    xs, ys, xq, yq = task
    with higher.innerloop_ctx(model, inner_opt, track_higher_grads=train) as (fmodel, diffopt):
        for _ in range(INNER_STEPS):
            diffopt.step(F.cross_entropy(fmodel(xs), ys), features=xs)  # M sees the batch features
        return F.cross_entropy(fmodel(xq), yq)


def main() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = SmallNet()
    weighting = CoordinateWeighting(feature_dim=FEATURES)  # M: one small MLP for every coordinate
    inner_opt = GWNMO(model.parameters(), weighting_net=weighting, lr=0.5)
    meta_opt = torch.optim.Adam(weighting.parameters(), lr=1e-2)

    held_out = [sample_task(gen) for _ in range(20)]

    def held_out_loss() -> float:
        losses = [query_loss_after_adaptation(model, inner_opt, t, train=False) for t in held_out]
        return float(torch.stack(losses).detach().mean())

    before = held_out_loss()
    for _ in range(40):
        meta_opt.zero_grad()
        loss = query_loss_after_adaptation(model, inner_opt, sample_task(gen), train=True)
        loss.backward()  # through all inner GWNMO steps into M's parameters
        meta_opt.step()
    after = held_out_loss()
    print(f"held-out query loss after {INNER_STEPS} GWNMO steps: {before:.4f} -> {after:.4f}")


if __name__ == "__main__":
    main()
