"""The task-batched inner loop (``--task-batch``) computes, per task, what one task alone computes."""

import dataclasses

import pytest
import torch
from torch.autograd import gradcheck

from gwnmo_meta.evaluation.evaluate import evaluate_tasks
from gwnmo_meta.optim.direction import gwnmo_direction, task_normalised_direction
from gwnmo_meta.optim.nets import CoordinateWeighting, ThesisMLPWeighting, _FusedTrunk, make_head
from gwnmo_meta.tasks.episodes import Episode, TaskSpec, stack_episodes
from gwnmo_meta.training.methods import MethodConfig, build_method
from tests.helpers import noisy_fewshot

TASKS = 3


def _layout(hidden=None):
    return [p.shape for p in make_head(16, 5, hidden).parameters()]


def _per_task_tensors(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(TASKS, *s, generator=g) for s in shapes]


def test_batched_direction_normalises_each_task_on_its_own():
    shapes = _layout(8)
    grads, weights = _per_task_tensors(shapes, 0), [torch.rand(TASKS, *s) for s in shapes]
    grads[0][1].mul_(100.0)  # tasks with very different gradient scales
    batched = gwnmo_direction(grads, weights, batched=True)
    for t in range(TASKS):
        alone = gwnmo_direction([g[t] for g in grads], [h[t] for h in weights])
        for b, a in zip(batched, alone, strict=False):
            torch.testing.assert_close(b[t], a)
        norm_d = torch.cat([b[t].reshape(-1) for b in batched]).norm()
        torch.testing.assert_close(norm_d, torch.cat([g[t].reshape(-1) for g in grads]).norm())


@pytest.mark.parametrize("through_norm", [False, True])
def test_fused_direction_matches_autograd_version_including_zero_gradients(through_norm):
    g = torch.randn(TASKS, 11, dtype=torch.double)
    g[1] = 0.0  # a task with a zero gradient: the eps floors bind
    g.requires_grad_()
    h = torch.rand(TASKS, 11, dtype=torch.double, requires_grad=True)
    w = torch.randn(TASKS, 11, dtype=torch.double)
    fused = task_normalised_direction(g, h, grad_through_norm=through_norm)
    ref = gwnmo_direction(g, h, batched=True, grad_through_norm=through_norm)
    torch.testing.assert_close(fused, ref)
    grads_fused = torch.autograd.grad((fused * w).sum(), (g, h))
    grads_ref = torch.autograd.grad((ref * w).sum(), (g, h))
    for a, b in zip(grads_fused, grads_ref, strict=False):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)


def test_fused_direction_gradcheck():
    """Full derivative by gradcheck; with ‖g‖ constant, against the Jacobian of (A/‖h∘g‖)(h∘g), A = ‖g₀‖ fixed."""
    g = torch.randn(TASKS, 11, dtype=torch.double, requires_grad=True)
    h = torch.rand(TASKS, 11, dtype=torch.double, requires_grad=True)
    assert gradcheck(lambda a, b: task_normalised_direction(a, b, grad_through_norm=True), (g, h))
    norm0 = g.detach().norm(dim=1, keepdim=True)

    def fixed_length(a, b):
        return norm0 / (a * b).norm(dim=1, keepdim=True) * (a * b)

    for i, x in enumerate((g, h)):

        def fused_i(v, i=i):
            args = [g, h]
            args[i] = v
            return task_normalised_direction(*args)

        def ref_i(v, i=i):
            args = [g, h]
            args[i] = v
            return fixed_length(*args)

        jac = torch.autograd.functional.jacobian
        torch.testing.assert_close(jac(fused_i, x.detach()), jac(ref_i, x.detach()))


def test_fused_trunk_gradcheck():
    d = dict(dtype=torch.double, requires_grad=True)
    args = (
        torch.randn(2, 5, 4, **d),
        torch.randn(2, 1, 6, **d),
        torch.randn(6, 4, **d),
        torch.randn(6, 6, **d),
        torch.randn(6, **d),
        torch.randn(1, 6, **d),
        torch.randn(1, **d),
    )
    assert gradcheck(_FusedTrunk.apply, args)


@pytest.mark.parametrize("kind", ["coordinate", "mlp"])
def test_weighting_nets_weight_each_task_as_alone(kind):
    shapes = _layout(8)
    torch.manual_seed(0)
    net = CoordinateWeighting(16) if kind == "coordinate" else ThesisMLPWeighting(16, shapes)
    params, grads = _per_task_tensors(shapes, 1), [1e-2 * x for x in _per_task_tensors(shapes, 2)]
    features = torch.randn(TASKS, 7, 16)
    probe = [torch.randn(TASKS, *s) for s in shapes]

    net.zero_grad()
    out = net(features, params, grads)
    sum((o * p).sum() for o, p in zip(out, probe, strict=False)).backward()
    batched_grads = [p.grad.clone() for p in net.parameters()]

    net.zero_grad()
    for t in range(TASKS):
        alone = net(features[t], [p[t] for p in params], [g[t] for g in grads])
        for o, a in zip(out, alone, strict=False):
            torch.testing.assert_close(o[t], a, rtol=1e-5, atol=1e-6)
        sum((a * p[t]).sum() for a, p in zip(alone, probe, strict=False)).backward()
    for b, p in zip(batched_grads, net.parameters(), strict=False):
        torch.testing.assert_close(b, p.grad, rtol=1e-4, atol=1e-6)


CASES = {
    "gwnmo coordinate alg2": dict(method="gwnmo"),
    "gwnmo coordinate alg1": dict(method="gwnmo", schedule="alg1"),
    "gwnmo unrolled, legacy through-norm": dict(
        method="gwnmo", schedule="unrolled", grad_through_norm=True
    ),
    "gwnmo inner batches, learned α per tensor": dict(
        method="gwnmo", inner_batch=5, learn_lr="tensor"
    ),
    "gwnmo mlp alg2": dict(method="gwnmo", weighting="mlp"),
    "gwnmo two-layer head": dict(method="gwnmo", head_hidden=8),
    "gwnmo fixed init, first-order": dict(method="gwnmo", learn_init=False, first_order=True),
    "gwnmo-prime": dict(method="gwnmo-prime"),
    "sgd": dict(method="sgd"),
    "adam": dict(method="adam", inner_lr=0.05),
    "hg": dict(method="hg"),
}


@pytest.mark.parametrize("case", CASES)
def test_task_batched_episodes_match_one_task_at_a_time(case):
    data = noisy_fewshot(0)
    sampler = data.sampler("train", TaskSpec(5, 2, 4), seed=3)
    eps = [sampler.sample() for _ in range(TASKS)]
    cfg = MethodConfig(inner_steps=3, task_batch=False, **{"inner_lr": 0.5, **CASES[case]})
    one = build_method(cfg, 16, 5)
    many = build_method(dataclasses.replace(cfg, task_batch=True), 16, 5)
    assert many.task_batched and not one.task_batched

    outs_one = [one.episode(ep, train=True) for ep in eps]
    (sum(o.meta_loss for o in outs_one) / TASKS).backward()
    loss_many, outs_many = many.episodes(eps, train=True)
    loss_many.backward()

    torch.testing.assert_close(loss_many, sum(o.meta_loss for o in outs_one).detach() / TASKS)
    for a, b in zip(outs_one, outs_many, strict=False):
        assert a.query_acc == pytest.approx(b.query_acc, abs=1e-6)
        assert a.query_loss == pytest.approx(b.query_loss, rel=1e-4, abs=1e-6)
        assert a.inner_losses == pytest.approx(b.inner_losses, rel=1e-4, abs=1e-6)
        assert a.stats.keys() == b.stats.keys()
        for k in a.stats:
            assert a.stats[k] == pytest.approx(b.stats[k], rel=1e-3, abs=1e-5), k
    grads_one = [p.grad for p in one.meta_parameters()]
    grads_many = [p.grad for p in many.meta_parameters()]
    scale = max(g.abs().max() for g in grads_one)
    assert scale > 0
    for a, b in zip(grads_one, grads_many, strict=False):
        assert (a - b).abs().max() <= 1e-4 * scale


def test_learn2learn_methods_adapt_one_task_at_a_time_even_with_task_batch():
    data = noisy_fewshot(0)
    sampler = data.sampler("train", TaskSpec(5, 1, 4), seed=0)
    eps = [sampler.sample() for _ in range(TASKS)]
    m = build_method(MethodConfig(method="maml", task_batch=True, inner_steps=2), 16, 5)
    assert not m.task_batched
    loss, outs = m.episodes(eps, train=True)
    assert len(outs) == TASKS
    torch.testing.assert_close(loss, torch.stack([o.meta_loss for o in outs]).mean())


def test_evaluation_in_task_batches_scores_the_same_tasks():
    data = noisy_fewshot(0)
    cfg = MethodConfig(method="gwnmo", inner_steps=2, inner_lr=0.5, task_batch=False)
    one, many = (
        build_method(cfg, 16, 5),
        build_method(dataclasses.replace(cfg, task_batch=True), 16, 5),
    )
    spec = TaskSpec(5, 1, 4)
    a = evaluate_tasks(one, data.sampler("test", spec, seed=7), 11, progress=False)
    b = evaluate_tasks(
        many, data.sampler("test", spec, seed=7), 11, progress=False, task_batch=4
    )  # 4 + 4 + 3
    assert b.tasks == a.tasks == 11
    assert b.accuracy.mean == pytest.approx(a.accuracy.mean, abs=1e-6)
    assert b.loss.mean == pytest.approx(a.loss.mean, rel=1e-4)


def test_stack_episodes():
    data = noisy_fewshot(0)
    sampler = data.sampler("train", TaskSpec(5, 2, 3), seed=0)
    eps = [sampler.sample() for _ in range(TASKS)]
    batch = stack_episodes(eps)
    assert isinstance(batch, Episode)
    assert batch.support_x.shape == (TASKS, 10, 16) and batch.query_y.shape == (TASKS, 15)
    assert torch.equal(batch.query_x[1], eps[1].query_x)
    with pytest.raises(ValueError):
        stack_episodes([])
