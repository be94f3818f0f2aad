"""Properties of the GWNMO update rule (thesis Definition 4.1, Theorem 4.1)."""

import pytest
import torch

from gwnmo_meta import gwnmo_direction
from gwnmo_meta.optim.nets import build_weighting


def _flat(xs):
    return torch.cat([x.reshape(-1) for x in xs])


@pytest.fixture
def grads_and_h():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    h = [torch.rand(3, 4, generator=g) * 0.98 + 0.01, torch.rand(5, generator=g) * 0.98 + 0.01]
    return grads, h


def test_norm_preserved_over_all_tensors(grads_and_h):
    grads, h = grads_and_h
    delta = gwnmo_direction(grads, h)
    assert _flat(delta).norm() == pytest.approx(float(_flat(grads).norm()), rel=1e-5)
    # per-tensor norms are NOT preserved: the norm is over the whole parameter vector
    assert abs(float(delta[0].norm() - grads[0].norm())) > 1e-3


def test_descent_direction_for_any_positive_weights(grads_and_h):
    grads, _ = grads_and_h
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        h = [torch.rand(t.shape, generator=g).clamp(1e-4, 1 - 1e-4) for t in grads]
        assert float(_flat(gwnmo_direction(grads, h)) @ _flat(grads)) > 0


def test_direction_proportional_to_h_times_g(grads_and_h):
    grads, h = grads_and_h
    d = _flat(gwnmo_direction(grads, h))
    hg = _flat([a * b for a, b in zip(h, grads, strict=False)])
    ratio = d / hg
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    assert ratio[0] > 0


def test_prime_is_plain_product(grads_and_h):
    grads, h = grads_and_h
    raw = [x * 3 - 1 for x in h]  # GWNMO' weights are unconstrained
    d = gwnmo_direction(grads, raw, normalize=False)
    assert all(torch.equal(a, b * c) for a, b, c in zip(d, raw, grads, strict=False))


def test_single_tensor_input_returns_tensor():
    g, h = torch.tensor([3.0, 4.0]), torch.tensor([0.5, 0.5])
    d = gwnmo_direction(g, h)
    assert isinstance(d, torch.Tensor) and torch.allclose(d, g)  # uniform h → Δ = g


def test_finite_on_zero_gradient_and_tiny_weights():
    zero = [torch.zeros(4, requires_grad=True)]
    h = torch.full((4,), 0.3, requires_grad=True)
    d = gwnmo_direction(zero, [h])[0]
    assert torch.equal(d, torch.zeros(4))
    d.sum().backward()
    assert torch.isfinite(h.grad).all()
    g = [torch.randn(6)]
    tiny = [torch.full((6,), 1e-30)]
    d2 = gwnmo_direction(g, tiny)[0]
    assert torch.isfinite(d2).all()
    under = [torch.zeros(6)]  # h∘g underflows to exactly 0 → no step, still finite
    assert torch.isfinite(gwnmo_direction(g, under)[0]).all()


def test_theorem_4_1_local_decrease_on_convex_quadratic():
    """f(x) = ½ xᵀAx − bᵀx with A ≻ 0 and a random (untrained) M: small α decreases f every step."""
    g = torch.Generator().manual_seed(0)
    n = 12
    q = torch.randn(n, n, generator=g)
    a = q @ q.t() + 0.5 * torch.eye(n)
    b = torch.randn(n, generator=g)
    torch.manual_seed(0)
    m = build_weighting("mlp", 4, [(n,)], hidden=16)
    for p in m.parameters():  # a random, non-trivial M
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(n, generator=g)
    feats = torch.randn(3, 4, generator=g)
    f = lambda v: 0.5 * v @ a @ v - b @ v  # noqa: E731
    alpha = 0.9 / float(torch.linalg.eigvalsh(a).max())
    values = [float(f(x))]
    for _ in range(100):
        grad = a @ x - b
        with torch.no_grad():
            h = torch.sigmoid(m(feats, [x], [grad])[0])
        assert not torch.allclose(h, h[0].expand_as(h), atol=1e-3)  # M really reweights
        x = x - alpha * gwnmo_direction(grad, h)
        values.append(float(f(x)))
    assert all(b_ < a_ for a_, b_ in zip(values, values[1:], strict=False))
    assert values[-1] < values[0] - 1.0
