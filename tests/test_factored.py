"""The factored weighting M (one weight per row): its fused step is GWNMO's maths, batched = unbatched."""

import pytest
import torch

from gwnmo_meta.optim.direction import bias_mask, flat_direction_stats, gwnmo_direction
from gwnmo_meta.optim.factored import FactoredWeighting, expand_rows, unit_stats, unit_step
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


@pytest.mark.parametrize("normalize", [True, False])
def test_unit_stats_afterwards_equal_the_steps_own_over_a_stack_of_steps(normalize):
    """unit_stats, from the row weights and the weighted direction alone, gives each step's own
    unit_step statistics, also for a stack of steps in front of the task dimension."""
    steps, expected, hs, gs_all = 4, [], [], []
    for seed in range(steps):
        net, feats, ps, gs = _setup(normalize, seed)
        raw, g_sq = net.scores(feats, [p.detach() for p in ps], [g.detach() for g in gs])
        h = torch.sigmoid(raw) if normalize else raw
        stats = {}
        unit_step(ps, gs, h, g_sq, 0.7, normalize=normalize, stats=stats)
        expected.append(stats)
        hs.append(h.detach())
        gs_all.append([g.detach() for g in gs])
    alone = unit_stats(hs[0], gs_all[0], 1, normalize=normalize)
    stacked = unit_stats(
        torch.stack(hs), [torch.stack(x) for x in zip(*gs_all, strict=True)], 2, normalize=normalize
    )
    assert set(alone) == set(expected[0]) == set(stacked)
    for k in expected[0]:
        torch.testing.assert_close(alone[k], expected[0][k])
        torch.testing.assert_close(stacked[k], torch.stack([e[k] for e in expected]))


def test_differentiable_gwnmo_factored_step_stats_average_every_step():
    """The fused factored path keeps each step's rows and computes their statistics in stacks
    (past the fold point too): step_stats() is the mean of the steps' own unit_step statistics."""
    import higher

    from gwnmo_meta.optim.gwnmo import GWNMO

    torch.manual_seed(0)
    head = torch.nn.Linear(5, 3).double()
    net = FactoredWeighting(5, hidden=8).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(std=0.5)
    x = torch.randn(T, 8, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (T, 8))
    per_step = []
    with higher.innerloop_ctx(
        head, GWNMO(head.parameters(), net, lr=0.1), track_higher_grads=False
    ) as (f, d):
        f.update_params([p.expand(T, *p.shape) for p in f.parameters()])
        steps = d.TRACE_FOLD + 3
        for _ in range(steps):
            params = list(f.parameters())
            logits = torch.baddbmm(params[1].unsqueeze(1), x, params[0].transpose(1, 2))
            loss = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), y, reduction="none"
            ).mean(1)
            grads = torch.autograd.grad(loss.sum(), params, retain_graph=True)
            stats = {}
            net.step(x, [p.detach() for p in params], [g.detach() for g in grads], 0.1, stats=stats)
            per_step.append(stats)
            d.step(loss.sum(), features=x)
            assert all(len(t) < d.TRACE_FOLD for t in d._row_trace.values())
        got = d.step_stats()
    assert set(got) == set(per_step[0])
    for k, v in got.items():
        torch.testing.assert_close(v, torch.stack([s[k] for s in per_step]).mean(0))


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
