"""GWNMO over a base direction (``--base grad|momentum|adam``).

With uniform h, GWNMO over a base is exactly the base optimizer, step for step, in both worlds
(``torch.optim`` and higher's differentiable inner loop, one task and task-batched); the
meta-gradient over Adam matches a hand-written autograd reference; the CLI runs, resumes and
evaluates such runs.
"""

from __future__ import annotations

import json
import math

import higher
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from gwnmo_meta.cli.app import app
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.optim.direction import Base
from gwnmo_meta.optim.gwnmo import GWNMO, LearnedStepSize
from gwnmo_meta.optim.nets import build_weighting, make_head
from gwnmo_meta.tasks.episodes import Episode
from gwnmo_meta.training.inner_loops import task_losses
from gwnmo_meta.training.methods import MethodConfig, build_method

DIM, WAYS, HIDDEN, STEPS, LR = 6, 3, 4, 5, 0.05
BASES = ("grad", "momentum", "adam")
WEIGHTINGS = ("mlp", "coordinate", "factored")


def reference_optimizer(base: str, params, lr: float) -> torch.optim.Optimizer:
    """The torch optimizer GWNMO over ``base`` reduces to with uniform h."""
    if base == "grad":
        return torch.optim.SGD(params, lr=lr)
    if base == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def last_layer(m: torch.nn.Module) -> torch.nn.Linear:
    return m.net[-1] if hasattr(m, "net") else m.out


def uniform_weighting(kind: str, base: str, shapes, prime: bool = False) -> torch.nn.Module:
    """An M whose output is one constant (zeroed last layer): h is uniform, whatever it reads."""
    torch.manual_seed(0)
    m = build_weighting(
        kind, DIM, shapes, hidden=8, prime=prime, state_inputs=Base(base).state_inputs
    ).double()
    with torch.no_grad():
        last_layer(m).weight.zero_()
        last_layer(m).bias.fill_(1.0 if prime else 0.3)  # GWNMO: any constant; GWNMO': h = 1
    return m


def batches(seed: int = 0, n: int = STEPS, tasks: int | None = None):
    g = torch.Generator().manual_seed(seed)
    lead = () if tasks is None else (tasks,)
    return [
        (
            torch.randn(*lead, 8, DIM, generator=g, dtype=torch.double),
            torch.randint(0, WAYS, (*lead, 8), generator=g),
        )
        for _ in range(n)
    ]


def head(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make_head(DIM, WAYS, HIDDEN).double()


def reference_trajectory(base: str, data) -> list[list[torch.Tensor]]:
    """The base torch optimizer's parameters after every step."""
    model = head()
    opt = reference_optimizer(base, model.parameters(), LR)
    out = []
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        out.append([p.detach().clone() for p in model.parameters()])
    return out


def assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prime", [False, True], ids=["gwnmo", "gwnmo-prime"])
@pytest.mark.parametrize("kind", WEIGHTINGS)
@pytest.mark.parametrize("base", BASES)
def test_uniform_h_is_the_base_torch_optimizer(base, kind, prime):
    data = batches()
    model = head()
    shapes = [p.shape for p in model.parameters()]
    m = uniform_weighting(kind, base, shapes, prime)
    opt = GWNMO(model.parameters(), m, lr=LR, normalize=not prime, base=base)
    for (x, y), ref in zip(data, reference_trajectory(base, data), strict=True):
        opt.zero_grad()  # in place: the base state must not alias p.grad
        F.cross_entropy(model(x), y).backward()
        opt.step(features=x)
        assert_same([p.detach() for p in model.parameters()], ref)
    if base != "grad":  # torch's key names, saved with the optimizer
        state = opt.state_dict()["state"][0]
        assert (
            set(state) == {"momentum_buffer"}
            if base == "momentum"
            else {"step", "exp_avg", "exp_avg_sq"}
        )


@pytest.mark.parametrize("learn_lr", [False, True], ids=["fixed-lr", "learned-lr"])
@pytest.mark.parametrize("kind", WEIGHTINGS)
@pytest.mark.parametrize("base", BASES)
def test_uniform_h_is_the_base_optimizer_inside_higher(base, kind, learn_lr):
    """One task, and T tasks at once (fast weights [T, ...]): each task follows the base optimizer."""
    tasks = 2
    model = head()
    shapes = [p.shape for p in model.parameters()]
    m = uniform_weighting(kind, base, shapes)
    step_size = LearnedStepSize(LR, len(shapes)).double() if learn_lr else None
    if step_size is not None:  # log α in double precision, so α = LR to the last bits
        step_size.log_lr.data.fill_(math.log(LR))
    opt = GWNMO(model.parameters(), m, lr=LR, base=base, step_size=step_size)
    for lead in (None, tasks):
        data = batches(seed=3, tasks=lead)
        with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
            if lead:
                fmodel.update_params([p.expand(lead, *p.shape) for p in fmodel.parameters()])
            trajectory = []
            for x, y in data:
                diffopt.step(task_losses(fmodel(x), y).sum(), features=x)  # task t: its own g
                trajectory.append([p for p in fmodel.parameters()])
            assert all(p.requires_grad for p in trajectory[-1])  # a differentiable loop
        for t in range(lead or 1):
            task = [(x[t], y[t]) for x, y in data] if lead else data
            for got, ref in zip(trajectory, reference_trajectory(base, task), strict=True):
                assert_same([p[t].detach() if lead else p.detach() for p in got], ref)


def test_base_state_is_fresh_in_every_inner_loop():
    model = head()
    m = uniform_weighting("coordinate", "adam", [p.shape for p in model.parameters()])
    opt = GWNMO(model.parameters(), m, lr=LR, base="adam")
    x, y = batches(n=1)[0]
    firsts = []
    for _ in range(2):
        with higher.innerloop_ctx(model, opt) as (fmodel, diffopt):
            diffopt.step(F.cross_entropy(fmodel(x), y), features=x)
            firsts.append([p.detach() for p in fmodel.parameters()])
            assert diffopt.state[0][0]["step"] == 1
    assert_same(firsts[0], firsts[1])


def test_weighting_must_read_the_bases_state():
    model = head()
    m = build_weighting("coordinate", DIM, [])
    with pytest.raises(ValueError, match="state_inputs=2"):
        GWNMO(model.parameters(), m, base="adam")


# ---- meta-gradient over Adam: against plain autograd ----------------------------------------
SHOTS, QUERY, INNER = 4, 2, 3
B1, B2, EPS = 0.9, 0.999, 1e-8


def _episode(seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(WAYS, 5, generator=g, dtype=torch.double)

    def draw(n):
        y = torch.arange(WAYS).repeat_interleave(n)
        return centers[y] + 0.5 * torch.randn(len(y), 5, generator=g, dtype=torch.double), y

    return Episode(*draw(SHOTS), *draw(QUERY))


def _method(schedule, weighting, **kw):
    cfg = MethodConfig(
        method="gwnmo",
        schedule=schedule,
        weighting=weighting,
        inner_steps=INNER,
        inner_lr=0.1,
        base="adam",
        **kw,
    )
    torch.manual_seed(0)
    m = build_method(cfg, 5, WAYS).double()
    for p in m.weighting.parameters():  # a non-trivial M (a fresh one is ≈ uniform h)
        torch.nn.init.normal_(p, std=0.4)
    return m


def _loss(phi, x, y):
    return F.cross_entropy(x @ phi[0].t() + phi[1], y)


def _ref_step(m, phi, state, x, y, t):
    """One GWNMO-over-Adam step written out: Adam's u, h = σ(M(x, φ, g, m̂, √v̂)), Δ = (‖u‖/‖h∘u‖)·h∘u."""
    g = torch.autograd.grad(_loss(phi, x, y), phi, create_graph=True)
    ms = [B1 * s + (1 - B1) * gi for s, gi in zip(state[0], g, strict=True)]
    vs = [B2 * s + (1 - B2) * gi * gi for s, gi in zip(state[1], g, strict=True)]
    m_hat = [mi / (1 - B1**t) for mi in ms]
    v_root = [vi.sqrt() / (1 - B2**t) ** 0.5 for vi in vs]
    u = [a / (b + EPS) for a, b in zip(m_hat, v_root, strict=True)]
    seen = [[z.detach() for z in m_hat], [z.detach() for z in v_root]]
    raw = m.weighting(x, [p.detach() for p in phi], [gi.detach() for gi in g], state=seen)
    hu = [torch.sigmoid(r) * ui for r, ui in zip(raw, u, strict=True)]
    scale = torch.sqrt(sum(ui.detach().pow(2).sum() for ui in u)) / torch.sqrt(
        sum(z.pow(2).sum() for z in hu)
    )
    return [p - m.cfg.lr * scale * z for p, z in zip(phi, hu, strict=True)], (ms, vs)


def _reference_meta_grad(m, ep, schedule):
    params = m.meta_parameters()
    phi0 = list(m.head.parameters())
    zeros = [[torch.zeros_like(p) for p in phi0] for _ in range(2)]
    xs, ys = ep.support_x, ep.support_y
    if schedule == "unrolled":  # the query loss after every step, through the state too
        phi, state = phi0, zeros
        for t in range(1, INNER + 1):
            phi, state = _ref_step(m, phi, state, xs, ys, t)
        return torch.autograd.grad(_loss(phi, ep.query_x, ep.query_y), params)
    # one-step look-ahead: φ_t and the state as values; each step judged on the query set
    total = [torch.zeros_like(p) for p in params]
    phi_bar, state = [p.detach() for p in phi0], zeros
    for t in range(1, INNER + 1):
        phi = [p.detach().requires_grad_() for p in phi_bar]
        nxt, new_state = _ref_step(m, phi, state, xs, ys, t)
        term = _loss(nxt, ep.query_x, ep.query_y) / INNER
        theta = params[: -len(phi0)]
        d = torch.autograd.grad(term, theta + phi)
        total = [a + b for a, b in zip(total, d, strict=True)]  # ∂φ̄_t/∂φ_0 = I for the init
        phi_bar, state = [p.detach() for p in nxt], [[s.detach() for s in xs_] for xs_ in new_state]
    return total


@pytest.mark.parametrize("weighting", ["coordinate", "factored"])
@pytest.mark.parametrize("batched", [False, True], ids=["one-task", "task-batched"])
@pytest.mark.parametrize("schedule", ["alg2", "unrolled"])
def test_adam_base_meta_gradient_matches_hand_reference(schedule, batched, weighting):
    m = _method(schedule, weighting, task_batch=batched)
    eps = [_episode(1), _episode(2)]
    if batched:
        loss, _ = m.episodes(eps, train=True)
    else:
        loss = torch.stack([m.episode(ep, train=True).meta_loss for ep in eps]).mean()
    got = torch.autograd.grad(loss, m.meta_parameters())
    refs = [_reference_meta_grad(m, ep, schedule) for ep in eps]
    for i, g in enumerate(got):
        torch.testing.assert_close(g, (refs[0][i] + refs[1][i]) / 2, rtol=1e-6, atol=1e-9)
    assert all(g.abs().sum() > 0 for g in got)


# ---- configuration and the CLI -----------------------------------------------------------
@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(method="maml", base="adam"), "--base applies to gwnmo and gwnmo-prime only"),
        (dict(base="rmsprop"), "unknown base direction 'rmsprop'"),
        (dict(base="momentum", base_beta2=0.99), "--base-beta2 applies to --base adam only"),
        (dict(base="grad", base_momentum=0.5), "--base-momentum applies to --base momentum"),
        (dict(base="adam", base_momentum=1.0), "--base-momentum must be in [0, 1)"),
        (dict(base="adam", base_beta2=float("nan")), "--base-beta2 must be a finite number"),
    ],
)
def test_bad_base_options_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        MethodConfig(**kw).validate()


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_over_adam_runs_refuses_a_mismatched_m_and_validates(tiny_data_root, tmp_path):
    common = ["train", "--data-root", tiny_data_root, "--backbone", "none", "--device", "cpu"]
    common += ["--epochs", "1", "--hidden", "4", "--weighting", "coordinate", "-q"]
    res = _cli(*common, "--base", "adam", "--lr", "0.01", "--out", tmp_path / "adam")
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "adam" / "results.json").read_text())["config"]
    assert (saved["base"], saved["base_momentum"], saved["base_beta2"]) == ("adam", 0.9, 0.999)
    from gwnmo_meta.optim.pretrained import load_weighting, weighting_base

    path = tmp_path / "adam" / "weighting.pt"
    assert weighting_base(path) == "adam" and load_weighting(path).state_inputs == 2
    again = _cli(
        *common, "--weighting-from", tmp_path / "adam" / "weighting.pt", "--out", tmp_path / "g"
    )
    assert again.exit_code == 2 and again.stderr.count("error:") == 1, again.output
    assert "give --base adam" in again.stderr
    bad = _cli(*common, "--optimizer", "sgd", "--base", "adam", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--base applies to" in bad.stderr, bad.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("base", ["momentum", "adam"])
def test_online_gwnmo_base_state_saves_and_continues_exactly(base):
    import io

    from gwnmo_meta.training.classic import ClassicConfig, OnlineGWNMO, make_target

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, DIM, generator=g), torch.randint(0, WAYS, (96,), generator=g)
    cfg = ClassicConfig(optimizer="gwnmo", weighting="coordinate", lr=0.05, base=base)

    def learner():
        torch.manual_seed(0)
        target = make_target(DIM, HIDDEN, WAYS)
        shapes = [p.shape for p in target.parameters()]
        m = build_weighting("coordinate", DIM, shapes, state_inputs=Base(base).state_inputs)
        return OnlineGWNMO(target, m, cfg, None)

    full, first = learner(), learner()
    for i in range(6):
        full.step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    for i in range(3):
        first.step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    buf = io.BytesIO()
    torch.save({"learner": first.state_dict(), "params": first.current()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = learner()
    resumed.load_state_dict(saved["learner"])
    resumed.params = dict(saved["params"])
    for i in range(3, 6):
        resumed.step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    for n, p in full.current().items():
        assert torch.equal(p, resumed.current()[n]), n
    fresh = learner()  # without the state the continuation differs: the test can fail
    fresh.params = dict(saved["params"])
    for i in range(3, 6):
        fresh.step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    assert not all(torch.equal(p, fresh.current()[n]) for n, p in full.current().items())


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_meta_train_over_adam_resumes_exactly_and_evaluates(tiny_data_root, tmp_path, weighting):
    import gwnmo_meta.training.trainer as trainer
    from tests.test_resume import assert_same_run, tiny_cfg

    cfg = tiny_cfg(tiny_data_root, base="adam", weighting=weighting, schedule="alg1")
    ref = tmp_path / "ref"
    assert trainer.meta_train(cfg, ref, progress=False).steps_done == cfg.meta_steps

    def stop(step):
        if step == 3:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    res = trainer.meta_train(cfg, out, progress=False, on_step=stop)
    assert res.interrupted and res.steps_done == 3
    assert trainer.meta_train(cfg, out, resume=True, progress=False).steps_done == cfg.meta_steps
    assert_same_run(ref, out)
    assert json.loads((out / "config.json").read_text())["base"] == "adam"
    ev = _cli("evaluate", out / "best.pt", "--tasks", 3, "--device", "cpu", "-q")
    assert ev.exit_code == 0, ev.output


def test_meta_train_cli_over_adam_with_learned_lr_and_unrolled(tiny_data_root, tmp_path):
    args = ["meta-train", "--data-root", tiny_data_root, "--backbone", "none", "--device", "cpu"]
    args += ["--meta-batch", "2", "--val-tasks", "3", "--query", "3", "--inner-steps", "2"]
    args += ["--meta-steps", "2", "--val-every", "2", "-q", "--method", "gwnmo", "--base", "adam"]
    res = _cli(*args, "--schedule", "unrolled", "--learn-lr", "tensor", "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    bad = _cli(*args, "--method", "maml", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and bad.stderr.count("error:") == 1, bad.output
    prime = _cli(*args, "--method", "gwnmo-prime", "--base", "momentum", "--out", tmp_path / "p")
    assert prime.exit_code == 0, prime.output


@pytest.mark.parametrize("kind", WEIGHTINGS)
def test_m_reads_the_base_state_and_keeps_its_gradient_layout(kind):
    """Without a base state M's first layer is as before; with one it is wider and M reads it."""
    shapes = [torch.Size([WAYS, DIM]), torch.Size([WAYS])]
    plain = build_weighting(kind, DIM, shapes, hidden=8)
    adam = build_weighting(kind, DIM, shapes, hidden=8, state_inputs=2)
    first = {n: p.shape for n, p in plain.named_parameters()}
    width = {"mlp": DIM + 2 * 21, "coordinate": 7 + 8, "factored": 6 + 8}[kind]
    extra = {"mlp": 2 * 21, "coordinate": 2, "factored": 4}[kind]
    name = "net.0.weight" if kind == "mlp" else "inp.weight"
    assert first[name] == (8, width)
    assert dict(adam.named_parameters())[name].shape == (8, width + extra)
    for p in adam.parameters():
        torch.nn.init.normal_(p, std=0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, DIM, generator=g)
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    state = [[torch.randn(s, generator=g) for s in shapes] for _ in range(2)]
    out = adam.forward_flat(x, params, grads, state)
    moved = [[s.clone() for s in state[0]], [2 * s + 1 for s in state[1]]]
    assert not torch.allclose(out, adam.forward_flat(x, params, grads, moved))
    with pytest.raises(ValueError, match="reads 2 base-state tensors, got 0"):
        adam.forward_flat(x, params, grads)


def test_default_step_size_over_a_base_is_the_base_optimizers():
    from gwnmo_meta.registry import METHODS
    from gwnmo_meta.training.classic import ClassicConfig

    adam, sgd = METHODS["adam"], METHODS["sgd"]
    assert ClassicConfig(base="adam", lr=0.5).step_size == 0.5  # (classic: tests/test_defaults.py)
    assert MethodConfig(base="adam").lr == adam.inner_lr.value
    assert MethodConfig(base="adam", adapt="all").lr == adam.inner_lr_all.value
    assert MethodConfig(base="momentum", base_momentum=0.5).lr == 0.5 * sgd.inner_lr.value
    assert MethodConfig().lr == METHODS["gwnmo"].inner_lr.value  # the thesis: unchanged


def test_functional_delta_over_a_base_is_the_optimizers_step():
    from gwnmo_meta.functional import gwnmo_delta

    model = head()
    shapes = [p.shape for p in model.parameters()]
    torch.manual_seed(2)
    m = build_weighting("coordinate", DIM, shapes, state_inputs=2).double()
    for p in m.parameters():  # a non-uniform M
        torch.nn.init.normal_(p, std=0.4)
    opt = GWNMO(model.parameters(), m, lr=LR, base="adam")
    phi = [p.detach().clone() for p in model.parameters()]
    state = [{} for _ in phi]
    for x, y in batches(n=3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step(features=x)
        state, us, seen = Base("adam").steps(state, grads)
        delta, _ = gwnmo_delta(m, x, phi, grads, state=seen, direction=us)
        phi = [p - LR * d for p, d in zip(phi, delta, strict=True)]
        assert_same(phi, [p.detach() for p in model.parameters()])


def test_protocol_tunes_a_row_over_adam_around_adams_step_size():
    from gwnmo_meta.registry import METHODS
    from gwnmo_meta.suites.protocol import hyperparameters

    adam = METHODS["adam"]
    assert hyperparameters("gwnmo", "all", {"base": "adam"}) == [
        ("inner_lr", adam.inner_lr_all.value)
    ]
    assert hyperparameters("gwnmo", "head") == [("inner_lr", METHODS["gwnmo"].inner_lr.value)]
