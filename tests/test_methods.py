"""Every method runs on the same episodes; baselines meta-learn what they should."""

import pytest
import torch

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import METHODS
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import synthetic_fewshot
from gwnmo_meta.training.methods import REFERENCE_METHODS, MethodConfig, build_method


@pytest.fixture(scope="module")
def episodes():
    s = synthetic_fewshot(dim=12).sampler("train", TaskSpec(5, 1, 4), seed=0)
    return [s.sample() for _ in range(2)]


@pytest.mark.parametrize("method", [m for m in METHODS if m not in REFERENCE_METHODS])
def test_each_method_trains_and_evaluates(method, episodes):
    learn_init = method not in ("sgd", "adam")
    m = build_method(MethodConfig(method=method, learn_init=learn_init, inner_steps=2), 12, 5)
    opt = m.make_meta_optimizer()
    out = m.episode(episodes[0], train=True)
    assert len(out.inner_losses) == 2 and 0.0 <= out.query_acc <= 1.0
    if method in ("sgd", "adam"):
        assert opt is None and out.meta_loss is None  # plain fine-tuning: nothing to meta-learn
    else:
        before = [p.detach().clone() for p in m.meta_parameters()]
        out.meta_loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.meta_parameters())
        opt.step()
        assert any(not torch.equal(a, b) for a, b in zip(before, m.meta_parameters(), strict=False))
    ev = m.episode(episodes[1], train=False)
    assert ev.meta_loss is None and ev.query_loss > 0


def test_meta_sgd_learns_step_sizes(episodes):
    m = build_method(MethodConfig(method="meta-sgd", inner_steps=1), 12, 5)
    m.episode(episodes[0], train=True).meta_loss.backward()
    lrs = [p for n, p in m.named_parameters() if "lrs" in n]
    assert lrs and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lrs)


def test_same_seed_same_initialisation():
    a = build_method(MethodConfig(method="gwnmo", seed=3), 12, 5)
    b = build_method(MethodConfig(method="gwnmo", seed=3), 12, 5)
    c = build_method(MethodConfig(method="gwnmo", seed=4), 12, 5)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=False)
    )
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="reptile"), "unknown method"),
        (dict(schedule="alg3"), "unknown schedule"),
        (dict(weighting="rnn"), "unknown weighting"),
        (dict(inner_steps=0), "positive"),
        (dict(method="maml", learn_init=False), "always meta-learns"),
    ],
)
def test_bad_method_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_method(MethodConfig(**kwargs), 12, 5)
