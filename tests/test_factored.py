"""The factored weighting M (one weight per row): its fused step is GWNMO's maths, batched = unbatched."""

import pytest
import torch

from gwnmo_meta.optim.direction import bias_mask, flat_direction_stats, gwnmo_direction
from gwnmo_meta.optim.factored import FactoredWeighting, expand_rows, unit_step
from gwnmo_meta.tasks.episodes import Episode
from gwnmo_meta.training.methods import MethodConfig, build_method

SHAPES = [(6, 4), (6,), (3, 2, 2, 2)]
T = 3


def _setup(normalize: bool, seed: int = 0):
    torch.manual_seed(seed)
    net = FactoredWeighting(5, hidden=8, init=0.0 if normalize else 1.0).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    feats = torch.randn(T, 7, 5, dtype=torch.float64)
    ps = [torch.randn(T, *s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    gs = [torch.randn(T, *s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    return net, feats, ps, gs


def _split(flat, shapes):
    out, i = [], 0
    for s in shapes:
        n = torch.Size(s).numel()
        out.append(flat[:, i : i + n].reshape(flat.shape[0], *s))
        i += n
    return out


@pytest.mark.parametrize("normalize,through_norm", [(True, False), (True, True), (False, False)])
def test_fused_step_is_gwnmo_direction_values_gradients_stats(normalize, through_norm):
    net, feats, ps, gs = _setup(normalize)
    raw, g_sq = net.scores(feats, [p.detach() for p in ps], [g.detach() for g in gs])
    h_rows = (torch.sigmoid(raw) if normalize else raw).detach().requires_grad_()
    h = _split(expand_rows(h_rows, SHAPES), SHAPES)
    delta = gwnmo_direction(
        gs, h, normalize=normalize, batched=True, grad_through_norm=through_norm
    )
    ref = [p - 0.7 * d for p, d in zip(ps, delta, strict=True)]
    stats = {}
    new = unit_step(
        ps, gs, h_rows, g_sq, 0.7, normalize=normalize, grad_through_norm=through_norm, stats=stats
    )
    for a, b in zip(ref, new, strict=True):
        torch.testing.assert_close(a, b)
    w = [torch.randn_like(x) for x in ref]
    wrt = [h_rows, *ps, *gs]
    g_ref = torch.autograd.grad(sum((a * b).sum() for a, b in zip(ref, w, strict=True)), wrt)
    g_new = torch.autograd.grad(sum((a * b).sum() for a, b in zip(new, w, strict=True)), wrt)
    for a, b in zip(g_ref, g_new, strict=True):
        torch.testing.assert_close(a, b)
    flat = [torch.cat([x.detach().reshape(T, -1) for x in xs], -1) for xs in (gs, h, delta)]
    expected = flat_direction_stats(*flat, bias_mask=bias_mask(SHAPES))
    assert set(stats) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(stats[k], v)


def test_batched_and_unbatched_outputs_agree():
    net, feats, ps, gs = _setup(True)
    batched = net(feats, [p.detach() for p in ps], [g.detach() for g in gs])
    for t in range(T):
        alone = net(feats[t], [p[t].detach() for p in ps], [g[t].detach() for g in gs])
        for a, b in zip(batched, alone, strict=True):
            torch.testing.assert_close(a[t], b)
            assert a[t].shape == b.shape
    # one weight per row: every coordinate of a row shares it
    assert torch.all(batched[0] == batched[0][..., :1])


def _episodes(n: int, dim: int = 8, seed: int = 0) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    return [
        Episode(
            torch.randn(10, dim, generator=g),
            torch.arange(5).repeat(2),
            torch.randn(15, dim, generator=g),
            torch.arange(5).repeat(3),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("method", ["gwnmo", "gwnmo-prime"])
def test_meta_gradient_flows_and_task_batch_matches(method):
    grads = {}
    for task_batch in (False, True):
        cfg = MethodConfig(
            method=method, weighting="factored", head_hidden=6, task_batch=task_batch
        )
        m = build_method(cfg, 8, 5).double()
        eps = [
            Episode(
                *(
                    t.double() if t.is_floating_point() else t
                    for t in (e.support_x, e.support_y, e.query_x, e.query_y)
                )
            )
            for e in _episodes(3)
        ]
        loss, outs = m.episodes(eps, train=True)
        loss.backward()
        grads[task_batch] = [p.grad.clone() for p in m.meta_parameters()]
        w = list(m.weighting.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in w)
        assert outs[0].weights.shape == (
            sum(torch.Size(s).numel() for s in [(6, 8), (6,), (5, 6), (5,)]),
        )
        assert 0 < outs[0].stats["h_mean"] and "cos_delta_g" in outs[0].stats
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(a, b)
