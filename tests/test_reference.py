"""Reference classifiers: prototype is exact on separated clusters, logreg reaches its optimum."""

import pytest
import torch

from gwnmo_meta.tasks.episodes import Episode
from gwnmo_meta.training.methods import MethodConfig, build_method
from gwnmo_meta.training.reference import (
    class_centroids,
    fit_logreg,
    logreg_objective,
    prototype_logits,
)


def _clusters(ways=5, shots=3, query=7, dim=8, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(ways, dim, generator=g), dim=1) * 3
    ys = torch.arange(ways).repeat_interleave(shots)
    yq = torch.arange(ways).repeat_interleave(query)
    xs = centers[ys] + spread * torch.randn(len(ys), dim, generator=g)
    xq = centers[yq] + spread * torch.randn(len(yq), dim, generator=g)
    return Episode(xs, ys, xq, yq)


def test_prototype_is_exact_on_well_separated_clusters_and_matches_brute_force():
    ep = _clusters()
    logits = prototype_logits(ep.support_x, ep.support_y, ep.query_x, 5)
    assert torch.equal(logits.argmax(1), ep.query_y)
    cents = torch.stack([ep.support_x[ep.support_y == c].mean(0) for c in range(5)])
    brute = -(torch.cdist(ep.query_x, cents) ** 2)
    assert torch.allclose(logits, brute, atol=1e-4)
    method = build_method(MethodConfig(method="prototype"), 8, 5)
    _, (out,) = method.episodes([ep], train=False)
    assert out.query_acc == 1.0 and out.meta_loss is None
    assert out.step_query_acc == [out.query_acc] and out.step_query_loss == [out.query_loss]


def test_prototype_task_batch_equals_one_task_at_a_time():
    eps = [_clusters(spread=1.0, seed=s) for s in range(3)]
    method = build_method(MethodConfig(method="prototype"), 8, 5)
    _, batched = method.episodes(eps, train=False)
    single = [method.episode(ep, train=False) for ep in eps]
    for a, b in zip(batched, single, strict=True):
        assert a.query_acc == pytest.approx(b.query_acc)
        assert a.query_loss == pytest.approx(b.query_loss, rel=1e-5)
    assert class_centroids(eps[0].support_x, eps[0].support_y, 5).shape == (5, 8)


def _newton_optimum(x, y, ways, l2, iters=25):
    """Newton's method in float64 on the penalised objective (exact Hessian via autograd)."""
    d = x.shape[1]
    theta = torch.zeros(ways * d + ways, dtype=torch.float64)

    def f(t):
        return logreg_objective(t[: ways * d].view(ways, d), t[ways * d :], x, y, l2)

    for _ in range(iters):
        g = torch.autograd.functional.jacobian(f, theta)
        h = torch.autograd.functional.hessian(f, theta)
        # the objective is invariant to a common shift of the biases: solve in the least-squares sense
        theta = theta - torch.linalg.lstsq(h, g.unsqueeze(1)).solution.squeeze(1)
    return theta[: ways * d].view(ways, d), theta[ways * d :]


def test_logreg_reaches_the_optimum_of_a_tiny_convex_problem():
    g = torch.Generator().manual_seed(1)
    ways, d = 3, 4
    x = torch.randn(12, d, generator=g, dtype=torch.float64)
    y = torch.arange(ways).repeat_interleave(4)
    l2 = 0.05
    w, b = fit_logreg(x, y, ways, l2, tolerance_grad=1e-10)
    w_ref, b_ref = _newton_optimum(x, y, ways, l2)
    assert torch.allclose(w, w_ref, atol=1e-6)
    # biases are determined up to a common shift (softmax); compare the centred ones
    assert torch.allclose(b - b.mean(), b_ref - b_ref.mean(), atol=1e-6)
    # stationarity: the gradient of the objective vanishes at the solution
    wv, bv = w.clone().requires_grad_(), b.clone().requires_grad_()
    logreg_objective(wv, bv, x, y, l2).backward()
    assert wv.grad.abs().max() < 1e-8 and bv.grad.abs().max() < 1e-8


def test_logreg_solves_stacked_tasks_independently_and_needs_a_penalty():
    eps = [_clusters(spread=1.0, seed=s) for s in range(2)]
    xs = torch.stack([e.support_x for e in eps]).double()
    ys = torch.stack([e.support_y for e in eps])
    w, b = fit_logreg(xs, ys, 5, 0.1, tolerance_grad=1e-9)
    for t in range(2):
        w1, b1 = fit_logreg(xs[t], ys[t], 5, 0.1, tolerance_grad=1e-9)
        assert torch.allclose(w[t], w1, atol=1e-5) and torch.allclose(b[t], b1, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        fit_logreg(xs[0], ys[0], 5, 0.0)


def test_reference_methods_have_nothing_to_meta_train(tmp_path):
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.errors import ConfigError
    from gwnmo_meta.training.trainer import meta_train

    method = build_method(MethodConfig(method="logreg"), 8, 5)
    assert method.meta_parameters() == [] and method.make_meta_optimizer() is None
    with pytest.raises(ConfigError, match="evaluate --method logreg"):
        meta_train(RunConfig(method="logreg"), tmp_path)
