"""gwnmo_meta.functional: the GWNMO step as a pure function, under torch.func, without higher."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from gwnmo_meta.functional import gwnmo_step
from gwnmo_meta.optim.gwnmo import GWNMO
from gwnmo_meta.optim.nets import build_weighting, make_head

KINDS = ["coordinate", "factored", "mlp"]


def _setup(kind: str, seed: int = 0, hidden: int | None = 4):
    torch.manual_seed(seed)
    head = make_head(6, 3, hidden=hidden)
    m = build_weighting(kind, 6, [tuple(p.shape) for p in head.parameters()], hidden=8)
    for p in m.parameters():  # away from the near-uniform init, so h differs between coordinates
        torch.nn.init.normal_(p, std=0.3)
    return head, m


def _loss(head, params, x, y):
    return F.cross_entropy(functional_call(head, params, (x,)), y)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_functional_step_equals_the_torch_optimizer_step(kind, normalize):
    head, m = _setup(kind)
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    params = {k: v.detach().clone() for k, v in head.named_parameters()}
    grads = grad(lambda p: _loss(head, p, x, y))(params)
    theta = dict(m.named_parameters())
    new = gwnmo_step(m, theta, x, params, grads, 0.3, normalize=normalize)

    F.cross_entropy(head(x), y).backward()
    GWNMO(head.parameters(), m, lr=0.3, normalize=normalize).step(features=x)
    for name, p in head.named_parameters():
        assert torch.equal(new[name], p.detach()), name  # the same numbers, bit for bit
        assert not torch.equal(new[name], params[name])
    as_list = gwnmo_step(
        m, theta, x, list(params.values()), list(grads.values()), 0.3, normalize=normalize
    )
    assert all(torch.equal(a, b) for a, b in zip(as_list, new.values(), strict=True))


def _tasks(count: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    xs, xq = torch.randn(count, 10, 6, generator=g), torch.randn(count, 12, 6, generator=g)
    ys, yq = (
        torch.randint(0, 3, (count, 10), generator=g),
        torch.randint(0, 3, (count, 12), generator=g),
    )
    return xs, ys, xq, yq


def _query_loss_fn(head, m, steps: int = 2, lr: float = 0.5):
    init = {k: v.detach() for k, v in head.named_parameters()}

    def query_loss(theta, xs, ys, xq, yq):
        params = init
        for _ in range(steps):
            g = grad(lambda p: _loss(head, p, xs, ys))(params)
            params = gwnmo_step(m, theta, xs, params, g, lr)
        return _loss(head, params, xq, yq)

    return query_loss


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_over_tasks_equals_a_loop_over_tasks(kind):
    head, m = _setup(kind)
    query_loss = _query_loss_fn(head, m)
    theta = {k: v.detach() for k, v in m.named_parameters()}
    tasks = _tasks(4)
    in_dims = (None, 0, 0, 0, 0)
    losses = vmap(query_loss, in_dims=in_dims)(theta, *tasks)
    meta_grads = vmap(grad(query_loss), in_dims=in_dims)(theta, *tasks)
    for t in range(4):
        task = [part[t] for part in tasks]
        torch.testing.assert_close(losses[t], query_loss(theta, *task), rtol=1e-5, atol=1e-6)
        one = grad(query_loss)(theta, *task)
        for name in theta:
            torch.testing.assert_close(meta_grads[name][t], one[name], rtol=1e-4, atol=1e-6)
    assert any(meta_grads[name].abs().sum() > 0 for name in theta)  # M gets a meta-gradient


def test_meta_gradient_equals_highers_differentiable_gwnmo():
    """The torch.func loop and higher's DifferentiableGWNMO are one algorithm: same meta-gradient."""
    import higher

    head, m = _setup("coordinate")
    xs, ys, xq, yq = (part[0] for part in _tasks(1))
    theta = {k: v.detach() for k, v in m.named_parameters()}
    expected = grad(_query_loss_fn(head, m))(theta, xs, ys, xq, yq)

    opt = GWNMO(head.parameters(), m, lr=0.5)
    with higher.innerloop_ctx(head, opt, copy_initial_weights=True) as (fmodel, diffopt):
        for _ in range(2):
            diffopt.step(F.cross_entropy(fmodel(xs), ys), features=xs)
        got = torch.autograd.grad(F.cross_entropy(fmodel(xq), yq), list(m.parameters()))
    for name, g in zip(theta, got, strict=True):
        torch.testing.assert_close(g, expected[name], rtol=1e-4, atol=1e-7)


def test_params_and_grads_must_have_the_same_structure():
    head, m = _setup("coordinate")
    params = dict(head.named_parameters())
    with pytest.raises(TypeError, match="both be dicts"):
        gwnmo_step(
            m, dict(m.named_parameters()), torch.randn(2, 6), params, list(params.values()), 0.1
        )


def test_functional_api_imports_and_runs_without_higher():
    code = textwrap.dedent(
        """
        import sys

        class NoHigher:  # higher (and learn2learn) are not installed, as far as Python can tell
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("higher", "learn2learn"):
                    raise ImportError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoHigher())
        try:
            import higher
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker does not work")

        import torch
        from torch.func import functional_call, grad, vmap
        from gwnmo_meta import CoordinateWeighting, gwnmo_step as root_step
        from gwnmo_meta.functional import gwnmo_step
        assert root_step is gwnmo_step

        head, m = torch.nn.Linear(6, 3), CoordinateWeighting(6)
        theta = dict(m.named_parameters())
        init = {k: v.detach() for k, v in head.named_parameters()}

        def loss(p, x, y):
            return torch.nn.functional.cross_entropy(functional_call(head, p, (x,)), y)

        def query_loss(theta, x, y):
            p = gwnmo_step(m, theta, x, init, grad(loss)(init, x, y), 0.5)
            return loss(p, x, y)

        x, y = torch.randn(2, 5, 6), torch.randint(0, 3, (2, 5))
        g = vmap(grad(query_loss), in_dims=(None, 0, 0))(theta, x, y)
        assert all(v.isfinite().all() for v in g.values())
        assert "higher" not in sys.modules and "learn2learn" not in sys.modules
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "ok"
