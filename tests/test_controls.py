"""Every objective for every meta-learned method, and learned step sizes for the SGD-like ones.

Each method's meta-gradient under each schedule is checked against a reference written by hand
with plain ``torch.autograd`` (no higher, no inner_loops module), in float64 on a linear head:
the inner rule (SGD with learned per-tensor / per-step / per-coordinate step sizes, HG, Adam) is
written out, the trajectory is computed, and the schedule's meta-loss is assembled from its
definition in docs/ALGORITHMS.md (look-ahead: every step restarted from the trajectory's values,
φ_t' = φ_0 + stopgrad(φ_t − φ_0), the inner optimizer's state cut likewise).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gwnmo_meta.config import RunConfig
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.tasks.episodes import Episode
from gwnmo_meta.training.methods import HigherMethod, L2LMethod, MethodConfig, build_method

WAYS, SHOTS, QUERY, DIM, STEPS, LR, BETA = 3, 2, 2, 5, 3, 0.5, 0.05


def _episode(seed: int) -> Episode:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(WAYS, DIM, generator=g, dtype=torch.double)

    def draw(n):
        y = torch.arange(WAYS).repeat_interleave(n)
        return centers[y] + 0.7 * torch.randn(len(y), DIM, generator=g, dtype=torch.double), y

    return Episode(*draw(SHOTS), *draw(QUERY))


def _method(method, schedule, learn_lr="off", learn_init=True, task_batch=False):
    cfg = MethodConfig(
        method=method,
        schedule=schedule,
        learn_lr=learn_lr,
        learn_init=learn_init,
        inner_steps=STEPS,
        inner_lr=LR,
        hg_beta=BETA,
        task_batch=task_batch,
    )
    m = build_method(cfg, DIM, WAYS).double()
    with torch.no_grad():  # step sizes that differ per tensor and step, and a non-trivial init
        for p in m.meta_parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


def _loss(phi, x, y):
    return F.cross_entropy(x @ phi[0].t() + phi[1], y)


def _alphas(m, t):
    """The learned α of every tensor at step t (a tensor per tensor: scalars, or per coordinate)."""
    if m.cfg.method == "meta-sgd":
        return list(m.step_size.lrs)
    if m.step_size is None:
        return [LR, LR]
    lr = m.step_size.log_lr.exp()
    row = lr[min(t, lr.shape[0] - 1)] if lr.dim() == 2 else lr.expand(2)
    return [row[0], row[1]]


def _rule_step(m, phi, g, t, state):
    """One step of the method's inner rule, written out: (new φ, new state)."""
    method = m.cfg.method
    if method == "adam":
        b1, b2, eps = 0.9, 0.999, 1e-8
        n = t + 1
        ms = [b1 * s + (1 - b1) * gi for s, gi in zip(state.get("m", [0, 0]), g, strict=True)]
        vs = [b2 * s + (1 - b2) * gi * gi for s, gi in zip(state.get("v", [0, 0]), g, strict=True)]
        size = LR * math.sqrt(1 - b2**n) / (1 - b1**n)
        new = [p - size * mi / (vi.sqrt() + eps) for p, mi, vi in zip(phi, ms, vs, strict=True)]
        return new, {"m": ms, "v": vs}
    alphas = _alphas(m, t)
    if method == "hg":  # α_t = ℓ_t + a_t, a_{t+1} = a_t + β g_{t+1} g_t
        if "prev" in state:
            adjust = [
                a + BETA * gi * pg for a, gi, pg in zip(state["adj"], g, state["prev"], strict=True)
            ]
        else:
            adjust = [0, 0]
        new = [p - (a + d) * gi for p, a, d, gi in zip(phi, alphas, adjust, g, strict=True)]
        return new, {"adj": adjust, "prev": g}
    return [p - a * gi for p, a, gi in zip(phi, alphas, g, strict=True)], state


def _detached(state):
    return {
        k: [v.detach() if isinstance(v, torch.Tensor) else v for v in vs] for k, vs in state.items()
    }


def _reference(m, ep, schedule):
    params, phi0 = m.meta_parameters(), list(m.head.parameters())
    learn_init = m.cfg.learn_init
    sx, sy, qx, qy = ep.support_x, ep.support_y, ep.query_x, ep.query_y
    if schedule == "unrolled":
        phi = phi0 if learn_init else [p.detach().requires_grad_() for p in phi0]
        state: dict = {}
        for t in range(STEPS):
            g = torch.autograd.grad(_loss(phi, sx, sy), phi, create_graph=True)
            phi, state = _rule_step(m, phi, g, t, state)
        return torch.autograd.grad(_loss(phi, qx, qy), params, allow_unused=True)
    meta, state = 0.0, {}
    bar = [p.detach() for p in phi0]
    for t in range(STEPS):
        if learn_init:
            phi = [p0 + (b - p0).detach() for p0, b in zip(phi0, bar, strict=True)]
        else:
            phi = [b.detach().requires_grad_() for b in bar]
        g = torch.autograd.grad(_loss(phi, sx, sy), phi, create_graph=True)
        nxt, state = _rule_step(m, phi, g, t, _detached(state))
        meta = meta + _loss(nxt, qx, qy) / STEPS
        bar = [p.detach() for p in nxt]
    return torch.autograd.grad(meta, params, allow_unused=True)


def _meta_grad(m, eps, batched):
    if batched:
        loss, _ = m.episodes(eps, train=True)
    else:
        loss = torch.stack([m.episode(ep, train=True).meta_loss for ep in eps]).mean()
    return torch.autograd.grad(loss, m.meta_parameters())


CASES = [  # (method, schedule, learn_lr, learn_init)
    ("sgd", "alg2", "tensor-step", True),
    ("sgd", "alg2", "tensor-step", False),  # the fixed-init control: only the step sizes learned
    ("sgd", "alg1", "global", True),
    ("sgd", "unrolled", "tensor-step", True),
    ("sgd", "unrolled", "tensor", False),
    ("maml", "alg2", "off", True),
    ("maml", "alg2", "tensor-step", True),
    ("maml", "unrolled", "tensor-step", True),
    ("meta-sgd", "alg2", "off", True),
    ("hg", "alg2", "tensor-step", True),
    ("hg", "unrolled", "tensor", False),
    ("adam", "alg2", "off", True),
    ("adam", "unrolled", "off", True),
]


@pytest.mark.parametrize("batched", [False, True], ids=["one-task", "task-batched"])
@pytest.mark.parametrize(("method", "schedule", "learn_lr", "learn_init"), CASES)
def test_meta_gradient_matches_hand_reference(method, schedule, learn_lr, learn_init, batched):
    m = _method(method, schedule, learn_lr, learn_init, task_batch=batched)
    assert isinstance(m, HigherMethod)
    eps = [_episode(1), _episode(2)]
    got = _meta_grad(m, eps, batched)
    refs = [_reference(m, ep, schedule) for ep in eps]
    for i, g in enumerate(got):
        torch.testing.assert_close(g, (refs[0][i] + refs[1][i]) / 2, rtol=1e-6, atol=1e-9)
    assert all(g.abs().sum() > 0 for g in got)


def test_look_ahead_and_unrolled_differ_for_a_baseline():
    ep = [_episode(3)]
    a = _meta_grad(_method("sgd", "alg2", "tensor-step"), ep, False)
    b = _meta_grad(_method("sgd", "unrolled", "tensor-step"), ep, False)
    assert not all(torch.allclose(x, y) for x, y in zip(a, b, strict=True))


def test_sgd_with_a_learned_init_is_maml():
    """Under MAML's objective, sgd --learn-init through higher and learn2learn's MAML agree."""
    torch.manual_seed(0)
    sgd, maml = (
        build_method(
            MethodConfig(method=name, schedule="unrolled", inner_steps=STEPS, inner_lr=LR),
            DIM,
            WAYS,
        ).double()
        for name in ("sgd", "maml")
    )
    assert isinstance(maml, L2LMethod)
    ep = _episode(4)
    for a, b in zip(_meta_grad(sgd, [ep], False), _meta_grad(maml, [ep], False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_learn2learn_methods_run_through_higher_only_where_they_must():
    def engine(**kw):
        return type(build_method(MethodConfig(inner_steps=1, **kw), DIM, WAYS))

    assert engine(method="maml") is L2LMethod  # the default: MAML's objective, fixed α
    assert engine(method="meta-sgd", schedule="unrolled") is L2LMethod
    assert engine(method="maml", schedule="alg2") is HigherMethod
    assert engine(method="maml", learn_lr="tensor-step") is HigherMethod
    assert engine(method="meta-sgd", schedule="alg1") is HigherMethod


def test_learned_step_sizes_are_logged_per_tensor_and_step():
    m = _method("sgd", "alg2", "tensor-step", learn_init=False)
    lrs = m.inner_lr()
    names = [n for n, _ in m.head.named_parameters()]
    assert sorted(lrs) == sorted(f"{n}@{t}" for t in range(STEPS) for n in names)
    assert len(set(lrs.values())) == len(lrs)  # perturbed above: all different


def test_schedule_defaults_and_refusals():
    assert RunConfig(method="gwnmo").schedule_name == "alg2"
    assert RunConfig(method="maml").schedule_name == "unrolled"
    assert RunConfig(method="sgd", schedule="alg1").schedule_name == "alg1"
    for bad in ("adam", "meta-sgd", "prototype"):
        with pytest.raises(ConfigError, match="--learn-lr applies to"):
            RunConfig(method=bad, learn_lr="tensor").validate()


def test_old_configs_keep_their_baselines_on_mamls_objective():
    """A config written before every method read --schedule (no "schema" key) held schedule
    "alg2" for baselines that ran unrolled: it loads as the method's default."""
    old = RunConfig(method="maml").to_dict()
    del old["schema"]
    old["schedule"] = "alg2"
    assert RunConfig.from_dict(old).schedule_name == "unrolled"
    old_gwnmo = {**old, "method": "gwnmo"}
    assert RunConfig.from_dict(old_gwnmo).schedule == "alg2"
    new = RunConfig(method="maml", schedule="alg2").to_dict()
    assert RunConfig.from_dict(new).schedule_name == "alg2"


def test_cli_sgd_look_ahead_with_per_step_step_sizes_end_to_end(
    tiny_data_root, tmp_path, monkeypatch
):
    """meta-train --method sgd --learn-init --schedule alg2 --learn-lr tensor-step --adapt all:
    runs, logs its step sizes, resumes exactly, records its schedule and evaluates."""
    from gwnmo_meta.io.checkpoint import load_checkpoint

    from .test_cli import event_tags, invoke, meta_train

    monkeypatch.setattr("gwnmo_meta.training.targets.WIDTH", 4)  # a narrow conv4: same paths
    flags = ["--method", "sgd", "--learn-init", "--schedule", "alg2", "--learn-lr", "tensor-step"]
    flags += ["--adapt", "all", "--val-every", "2", "--test-tasks", "3"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    res = meta_train(tiny_data_root, whole, *flags, "--meta-steps", "4")
    assert res.exit_code == 0, res.output
    assert meta_train(tiny_data_root, cut, *flags, "--meta-steps", "2").exit_code == 0
    res = meta_train(tiny_data_root, cut, *flags, "--meta-steps", "4", "--resume")
    assert res.exit_code == 0, res.output
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(cut / "last.pt")
    assert a["method"].keys() == b["method"].keys() and any("log_lr" in k for k in a["method"])
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"])
    assert any(t.startswith("lr/inner/") and "@0" in t for t in event_tags(whole))
    assert json.loads((whole / "config.json").read_text())["schedule"] == "alg2"
    assert json.loads((whole / "test.json").read_text())["schedule"] == "alg2"
    res = invoke("evaluate", whole / "best.pt", "--tasks", "3", "--data-root", tiny_data_root)
    assert res.exit_code == 0, res.output
