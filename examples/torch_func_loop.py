"""Meta-train GWNMO's M in a plain ``torch.func`` loop: ``vmap(grad(...))`` over a batch of tasks.

No higher: the inner loop is ``torch.func.grad`` for the target's gradients and
:func:`gwnmo_meta.functional.gwnmo_step` for GWNMO's update, both pure functions. The query loss
after the inner steps is differentiated with respect to M's parameters (``grad``) for every task
of a meta-batch at once (``vmap``), and Adam applies the mean meta-gradient to M.

Run: ``python examples/torch_func_loop.py [--weighting coordinate|factored]`` (seconds on a CPU).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from gwnmo_meta import build_weighting
from gwnmo_meta.functional import gwnmo_step

INFORMATIVE, NOISE, CLASSES, INNER_STEPS, INNER_LR = 4, 12, 4, 3, 0.5
FEATURES = INFORMATIVE + NOISE


def sample_tasks(gen: torch.Generator, count: int) -> tuple[Tensor, ...]:
    """``count`` 4-class tasks: 4 informative features and 12 loud, class-independent noise features.

    Returns support and query sets stacked over tasks: xs, ys, xq, yq ([count, 20, ...] each).
    """
    centers = torch.randn(count, CLASSES, INFORMATIVE, generator=gen)
    y = torch.arange(CLASSES).repeat(10).expand(count, -1)
    signal = torch.gather(centers, 1, y.unsqueeze(-1).expand(-1, -1, INFORMATIVE))
    signal = signal + 0.3 * torch.randn(count, y.shape[1], INFORMATIVE, generator=gen)
    x = torch.cat([signal, 3.0 * torch.randn(count, y.shape[1], NOISE, generator=gen)], -1)
    return x[:, :20], y[:, :20], x[:, 20:], y[:, 20:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weighting", choices=("coordinate", "factored"), default="coordinate")
    parser.add_argument("--meta-steps", type=int, default=30)
    parser.add_argument("--meta-batch", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    init = {k: v.detach() for k, v in model.named_parameters()}  # every task starts here
    weighting = build_weighting(args.weighting, FEATURES, [p.shape for p in init.values()])
    meta_opt = torch.optim.Adam(weighting.parameters(), lr=1e-2)

    def loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    def query_loss(theta: dict[str, Tensor], xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
        """One task: GWNMO steps on the support set, then the query loss (a function of M's θ)."""
        params = init
        for _ in range(INNER_STEPS):
            params = gwnmo_step(weighting, theta, xs, params, grad(loss)(params, xs, ys), INNER_LR)
        return loss(params, xq, yq)

    per_task_meta_grad = vmap(grad(query_loss), in_dims=(None, 0, 0, 0, 0))
    per_task_loss = vmap(query_loss, in_dims=(None, 0, 0, 0, 0))

    def theta() -> dict[str, Tensor]:
        return {k: v.detach() for k, v in weighting.named_parameters()}

    held_out = sample_tasks(gen, 32)
    before = float(per_task_loss(theta(), *held_out).mean())
    for _ in range(args.meta_steps):
        meta_grads = per_task_meta_grad(theta(), *sample_tasks(gen, args.meta_batch))
        for name, p in weighting.named_parameters():
            p.grad = meta_grads[name].mean(0)  # the meta-batch's mean meta-gradient
        meta_opt.step()
    after = float(per_task_loss(theta(), *held_out).mean())
    print(f"held-out query loss after {INNER_STEPS} GWNMO steps: {before:.4f} -> {after:.4f}")


if __name__ == "__main__":
    main()
