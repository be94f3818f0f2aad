"""--adapt all: conv4 + head adapted end to end from images (task batch = one at a time, BN per task, CLI)."""

import json

import pytest
import torch

from gwnmo_meta.errors import ConfigError
from gwnmo_meta.tasks.episodes import Episode
from gwnmo_meta.training.methods import MethodConfig, build_method
from gwnmo_meta.training.targets import IMAGE_DIM, Conv4Target

from .test_cli import event_tags, invoke, meta_train


@pytest.fixture(autouse=True)
def narrow_conv4(monkeypatch):
    """conv4 with 4 channels instead of 64: the same code paths at a fraction of the cost."""
    monkeypatch.setattr("gwnmo_meta.training.targets.WIDTH", 4)


def _episodes(n: int, seed: int = 0, dtype=torch.float32) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    return [
        Episode(
            torch.randn(5, IMAGE_DIM, generator=g, dtype=dtype),
            torch.arange(5),
            torch.randn(10, IMAGE_DIM, generator=g, dtype=dtype),
            torch.arange(5).repeat(2),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "method,weighting,first_order,conv_bias",
    [
        ("gwnmo", "factored", False, False),
        ("gwnmo", "coordinate", True, True),
    ],
)
def test_task_batched_meta_gradient_equals_one_task_at_a_time(
    method, weighting, first_order, conv_bias
):
    grads, accs = {}, {}
    for task_batch in (False, True):
        cfg = MethodConfig(
            method=method,
            weighting=weighting,
            adapt="all",
            conv_bias=conv_bias,
            inner_steps=2,
            first_order=first_order,
            task_batch=task_batch,
        )
        m = build_method(cfg, IMAGE_DIM, 5).double()
        loss, outs = m.episodes(_episodes(2, dtype=torch.float64), train=True)
        loss.backward()
        grads[task_batch] = [p.grad.clone() for p in m.meta_parameters()]
        accs[task_batch] = [o.query_acc for o in outs]
    assert accs[False] == pytest.approx(accs[True])
    assert all(g.abs().sum() > 0 for g in grads[True][-4:])  # the conv4 init is meta-learned
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "method", ["gwnmo", "gwnmo-prime", "maml", "meta-sgd", "hg", "sgd", "adam"]
)
def test_every_method_adapts_conv4_end_to_end(method):
    m = build_method(MethodConfig(method=method, adapt="all", inner_steps=1), IMAGE_DIM, 5)
    assert isinstance(getattr(m, "head", None) or m.learner.module, Conv4Target)
    loss, outs = m.episodes(_episodes(2), train=True)
    loss.backward()
    assert len(outs) == 2 and all(0 <= o.query_acc <= 1 for o in outs)


def test_reference_methods_refuse_adapt_all():
    with pytest.raises(ConfigError, match="adapt all"):
        MethodConfig(method="prototype", adapt="all").validate()


def test_conv4_convolutions_carry_no_bias_unless_asked_and_old_runs_keep_theirs():
    """BatchNorm cancels a conv bias: new runs drop it; configs written before keep theirs."""
    from gwnmo_meta.config import RunConfig

    def conv_biases(cfg):
        net = build_method(MethodConfig(**cfg.to_dict()), IMAGE_DIM, 5)
        return [n for n, _ in net.named_parameters() if "convs" in n and n.endswith("bias")]

    assert RunConfig().conv_bias is False
    assert conv_biases(RunConfig(method="sgd", adapt="all")) == []
    old = RunConfig(method="sgd", adapt="all").to_dict()
    del old["conv_bias"]
    old["schema"] = 2
    assert len(conv_biases(RunConfig.from_dict(old))) == 4
    assert RunConfig.from_dict({**old, "schema": 3}).conv_bias is False
    with pytest.raises(ConfigError, match="schema"):
        RunConfig.from_dict({**old, "schema": "2"})


@pytest.mark.parametrize("bias", [False, True])
def test_batchnorm_statistics_do_not_leak_between_tasks_or_into_evaluation(bias):
    net = Conv4Target(5, bias=bias)
    assert not list(net.buffers())  # no running statistics to carry anything over
    a, b = _episodes(2)
    # task a's output does not depend on which task is batched with it (grouped convs, per-task BN)
    ps = [p.detach().unsqueeze(0).repeat(2, *[1] * p.dim()) for p in net.parameters()]
    names = [n for n, _ in net.named_parameters()]
    batched = torch.func.functional_call(
        net, dict(zip(names, ps, strict=True)), (torch.stack([a.support_x, b.support_x]),)
    )
    other = torch.stack([a.support_x, 3 * b.support_x + 1])
    batched2 = torch.func.functional_call(net, dict(zip(names, ps, strict=True)), (other,))
    torch.testing.assert_close(batched[0], batched2[0])
    torch.testing.assert_close(batched[0], net(a.support_x), rtol=1e-4, atol=1e-5)
    # evaluation uses the batch's own statistics too: eval mode = train mode, before and after tasks
    net.eval()
    before = net(a.query_x)
    net.train()
    net(3 * b.query_x + 1)
    net.eval()
    torch.testing.assert_close(net(a.query_x), before)


def test_cli_meta_train_and_evaluate_adapt_all(tiny_data_root, tmp_path):
    out = tmp_path / "run"
    for method in ("gwnmo", "maml"):
        run = out / method
        res = meta_train(
            tiny_data_root,
            run,
            "--adapt",
            "all",
            "--method",
            method,
            "--weighting",
            "factored",
            "--meta-steps",
            "2",
            "--val-every",
            "2",
            "--test-tasks",
            "3",
        )
        assert res.exit_code == 0, res.output
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["adapt"] == "all"
        assert "meta-val/accuracy" in event_tags(run)
        res = invoke("evaluate", run / "best.pt", "--tasks", "3", "--data-root", tiny_data_root)
        assert res.exit_code == 0, res.output
    res = meta_train(
        tiny_data_root,
        out / "gwnmo",
        "--adapt",
        "all",
        "--weighting",
        "factored",
        "--method",
        "gwnmo",
        "--meta-steps",
        "4",
        "--val-every",
        "2",
        "--resume",
    )
    assert res.exit_code == 0, res.output
    res = meta_train(
        tiny_data_root, out / "gwnmo", "--meta-steps", "6", "--val-every", "2", "--resume"
    )
    assert res.exit_code == 2 and "adapt" in res.output


def test_adapt_all_on_the_mixed_pool(tiny_data_root, tmp_path):
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.training.trainer import meta_train as train

    cfg = RunConfig(
        dataset="mixed",
        data_root=str(tiny_data_root),
        skip_integrity_check=True,
        adapt="all",
        weighting="factored",
        meta_steps=1,
        val_every=1,
        val_tasks=2,
        query=2,
        meta_batch=2,
        inner_steps=1,
        device="cpu",
    )
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.steps_done == 1 and 0 <= res.best_val_accuracy <= 1


def test_protocol_suite_with_adapt_all_starts_from_the_end_to_end_step_sizes(
    tiny_data_root, tmp_path
):
    from gwnmo_meta.registry import METHODS
    from gwnmo_meta.suites.protocol import build_protocol, run_protocol
    from tests.helpers import tiny_base

    base = tiny_base(
        tiny_data_root, adapt="all", inner_steps=1, meta_steps=1, val_every=1, val_tasks=2
    )
    suite = build_protocol(
        base=base, sources=["mnist"], shots=[1], schedules=("alg2",), seeds=[0], test_tasks=2,
        methods=("gwnmo", "maml", "adam"), regimes=("learned",), grid_points=1,
    )  # fmt: skip
    results, _ = run_protocol(suite, tmp_path, progress=False)
    rows = {r["row"]: r for r in results["groups"][0]["rows"]}
    assert set(rows) == {"gwnmo alg2 [learned]", "maml [learned]", "adam [learned]"}
    for name, method in (("gwnmo alg2", "gwnmo"), ("maml", "maml"), ("adam", "adam")):
        ((hparams, _),) = rows[f"{name} [learned]"]["grid"]  # one grid point: no tuning
        assert hparams == {"inner_lr": METHODS[method].inner_lr_all.value}
    assert results["settings"]["adapt"] == "all"
    assert "end to end" in (tmp_path / "results.md").read_text()
    # reference rows classify frozen backbone features: left out by default, refused by name
    assert "prototype" not in {v.name for v in build_protocol(base=base).variants}
    with pytest.raises(ConfigError, match="--adapt head"):
        build_protocol(base=base, methods=("prototype",))
