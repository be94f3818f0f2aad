"""Task-batching conv4 end to end: grouped convolutions vs torch.func (vmap over functional_call).

    .venv/bin/python benchmarks/conv_task_batching.py [--out benchmarks/endtoend]

Times one forward and second-order gradient (create_graph, then a backward through it, as an inner
step of MAML/GWNMO does) of conv4+head for T tasks with their own weights, 5-way 1-shot support
sets (5 images per task), alternating the two implementations (medians), and checks that both give
the same numbers. One thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from gwnmo_meta.training.targets import Conv4Target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/endtoend")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = Conv4Target(5)
    names = [n for n, _ in net.named_parameters()]
    results = {}
    for tasks in (1, 4):
        x = torch.randn(tasks, 5, 3072)
        y = torch.arange(5).expand(tasks, -1)
        base = [p.detach().unsqueeze(0).repeat(tasks, *[1] * p.dim()) for p in net.parameters()]

        def grouped(base=base, x=x, y=y):
            ps = [p.clone().requires_grad_() for p in base]
            out = torch.func.functional_call(net, dict(zip(names, ps, strict=True)), (x,))
            loss = F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1).sum()
            gs = torch.autograd.grad(loss, ps, create_graph=True)
            sum(g.pow(2).sum() for g in gs).backward()
            return gs

        def one(params, xt, yt):
            out = functional_call(net, dict(zip(names, params, strict=True)), (xt,))
            return F.cross_entropy(out, yt)

        def vmapped(base=base, x=x, y=y):
            ps = [p.clone().requires_grad_() for p in base]
            loss = vmap(one)(ps, x, y).sum()
            gs = torch.autograd.grad(loss, ps, create_graph=True)
            sum(g.pow(2).sum() for g in gs).backward()
            return gs

        ga, gb = grouped(), vmapped()
        diff = max(float((a - b).detach().abs().max()) for a, b in zip(ga, gb, strict=True))
        ta, tb = [], []
        for r in range(args.rounds + 2):
            for fn, acc in ((grouped, ta), (vmapped, tb)):
                t0 = time.perf_counter()
                fn()
                if r >= 2:
                    acc.append(time.perf_counter() - t0)
        results[tasks] = {
            "grouped_ms": 1e3 * statistics.median(ta),
            "vmap_ms": 1e3 * statistics.median(tb),
            "ratio_vmap_over_grouped": statistics.median(
                b / a for a, b in zip(ta, tb, strict=True)
            ),
            "max_abs_grad_diff": diff,
        }
        print(tasks, results[tasks], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conv_task_batching.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
