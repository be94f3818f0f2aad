"""GWNMO as torch and higher optimizers; HG; weighting network sizes."""

import higher
import pytest
import torch
import torch.nn.functional as F

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.optim.gwnmo import GWNMO, HG, DifferentiableGWNMO
from gwnmo_meta.optim.nets import (
    CoordinateWeighting,
    ThesisMLPWeighting,
    build_weighting,
    make_head,
)


def _setup(kind="mlp", seed=0):
    torch.manual_seed(seed)
    head = make_head(6, 3, hidden=4)
    m = build_weighting(kind, 6, [tuple(p.shape) for p in head.parameters()], hidden=8)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    return head, m, x, y


@pytest.mark.parametrize("kind", ["mlp", "coordinate"])
@pytest.mark.parametrize("normalize", [True, False])
def test_higher_step_matches_torch_step(kind, normalize):
    head, m, x, y = _setup(kind)
    plain = make_head(6, 3, hidden=4)
    plain.load_state_dict(head.state_dict())
    opt = GWNMO(head.parameters(), m, lr=0.3, normalize=normalize)
    with higher.innerloop_ctx(head, opt, copy_initial_weights=True) as (fmodel, diffopt):
        assert isinstance(diffopt, DifferentiableGWNMO)
        diffopt.step(F.cross_entropy(fmodel(x), y), features=x)
        fast = [p.detach() for p in fmodel.parameters()]
    popt = GWNMO(plain.parameters(), m, lr=0.3, normalize=normalize)
    F.cross_entropy(plain(x), y).backward()
    popt.step(features=x)
    for a, b in zip(fast, plain.parameters(), strict=False):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(
        fast[0], head.weight if hasattr(head, "weight") else list(head.parameters())[0]
    )


def test_override_channel_also_carries_features():
    head, m, x, y = _setup()
    opt = GWNMO(head.parameters(), m, lr=0.3)
    with higher.innerloop_ctx(head, opt, copy_initial_weights=True) as (fmodel, diffopt):
        diffopt.step(F.cross_entropy(fmodel(x), y), override={"features": [x]})
        a = [p.detach() for p in fmodel.parameters()]
    with higher.innerloop_ctx(head, opt, copy_initial_weights=True) as (fmodel, diffopt):
        diffopt.step(F.cross_entropy(fmodel(x), y), features=x)
        b = [p.detach() for p in fmodel.parameters()]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=False))
    with higher.innerloop_ctx(head, opt, copy_initial_weights=True) as (fmodel, diffopt):
        with pytest.raises(ValueError, match="features"):
            diffopt.step(F.cross_entropy(fmodel(x), y))


@pytest.mark.parametrize("kind", ["mlp", "coordinate"])
def test_meta_gradient_reaches_weighting_network(kind):
    head, m, x, y = _setup(kind)
    opt = GWNMO(head.parameters(), m, lr=0.3)
    with higher.innerloop_ctx(head, opt, copy_initial_weights=True) as (fmodel, diffopt):
        for _ in range(2):
            diffopt.step(F.cross_entropy(fmodel(x), y), features=x)
        F.cross_entropy(fmodel(x), y).backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_torch_gwnmo_descends_and_records_stats():
    head, m, x, y = _setup()
    opt = GWNMO(head.parameters(), m, lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y)
        loss.backward()
        opt.step(features=x)
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    s = opt.last_stats
    assert float(s["delta_over_g"]) == pytest.approx(1.0, rel=1e-4)  # normalised: ‖Δ‖ = ‖g‖
    assert 0 < float(s["cos_delta_g"]) <= 1 + 1e-6
    assert 0 < float(s["h_mean"]) < 1


def test_hg_adapts_step_sizes_and_matches_higher():
    torch.manual_seed(0)
    head = make_head(5, 2)
    x, y = torch.randn(8, 5), torch.randint(0, 2, (8,))
    twin = make_head(5, 2)
    twin.load_state_dict(head.state_dict())
    opt = HG(head.parameters(), lr=0.1, beta=0.01)
    with higher.innerloop_ctx(
        twin, HG(twin.parameters(), lr=0.1, beta=0.01), copy_initial_weights=True
    ) as (f, d):
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(head(x), y).backward()
            opt.step()
            d.step(F.cross_entropy(f(x), y))
        fast = [p.detach() for p in f.parameters()]
    for a, b in zip(fast, head.parameters(), strict=False):
        assert torch.allclose(a, b, atol=1e-6)
    alpha = opt.state[head.weight]["alpha"]
    assert not torch.allclose(alpha, torch.full_like(alpha, 0.1))  # step sizes moved per element


def test_coordinate_net_size_independent_of_target():
    small = CoordinateWeighting(16)
    n_small = sum(p.numel() for p in small.parameters())
    big_head = make_head(16, 1000, hidden=1000)
    net = build_weighting("coordinate", 16, [tuple(p.shape) for p in big_head.parameters()])
    assert sum(p.numel() for p in net.parameters()) == n_small
    out = net(
        torch.randn(4, 16),
        list(big_head.parameters()),
        [torch.randn_like(p) for p in big_head.parameters()],
    )
    assert [o.shape for o in out] == [p.shape for p in big_head.parameters()]


def test_thesis_mlp_grows_with_target_and_is_refused_when_too_big():
    a = ThesisMLPWeighting.parameter_count(16, 1_000, 32)
    b = ThesisMLPWeighting.parameter_count(16, 2_000, 32)
    assert b > 1.9 * a
    with pytest.raises(ConfigError, match="coordinate"):
        build_weighting("mlp", 256, [(4096, 4096), (4096,)], hidden=32)


def test_differentiable_gwnmo_step_stats_average_every_step_with_bounded_memory():
    """step_stats() is the mean of per-step direction_stats, also past the trace's fold point."""
    from gwnmo_meta.optim.direction import direction_stats, gwnmo_direction

    torch.manual_seed(0)
    head = torch.nn.Linear(6, 3)
    net = CoordinateWeighting(6)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    per_step = []
    with higher.innerloop_ctx(
        head, GWNMO(head.parameters(), net, lr=0.1), track_higher_grads=False
    ) as (f, d):
        steps = d.TRACE_FOLD + 3
        for _ in range(steps):
            params = list(f.parameters())
            loss = torch.nn.functional.cross_entropy(f(x), y)
            grads = torch.autograd.grad(loss, params, retain_graph=True)
            h = [torch.sigmoid(r) for r in net(x, params, grads)]
            per_step.append(direction_stats(grads, h, gwnmo_direction(list(grads), h)))
            d.step(loss, features=x)
            assert len(d._trace) < d.TRACE_FOLD
        stats = d.step_stats()
    for k in per_step[0]:
        assert float(stats[k]) == pytest.approx(
            float(torch.stack([s[k] for s in per_step]).mean()), rel=1e-5, abs=1e-7
        ), k
