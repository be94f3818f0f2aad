"""Classic training mode: each optimizer, Algorithms 1/2 online, reusing a meta-trained M."""

import pytest
import torch
from typer.testing import CliRunner

from gwnmo_meta.classic import OPTIMIZERS, ClassicConfig, OnlineGWNMO, make_target, train_classic
from gwnmo_meta.cli.app import app
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.nets import build_weighting


def _features(seed=0, n=256, dim=12, classes=4):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    return x[:200], y[:200], x[200:], y[200:]


@pytest.mark.parametrize(
    "optimizer, schedule",
    [
        (o, s)
        for o in OPTIMIZERS
        for s in (("alg1", "alg2") if o.startswith("gwnmo") else ("alg1",))
    ],
)
def test_each_optimizer_learns_in_one_epoch(optimizer, schedule):
    lr = {"adam": 0.01}.get(optimizer, 0.1)
    cfg = ClassicConfig(
        optimizer=optimizer,
        schedule=schedule,
        epochs=1,
        batch_size=16,
        hidden=8,
        lr=lr,
        device="cpu",
    )
    (res,) = train_classic(cfg, progress=False, features=_features())
    assert res.epochs[0].test_accuracy > 0.6  # 4 classes: chance is 0.25


def _meta_grads(schedule):
    torch.manual_seed(0)
    x, y, _, _ = _features()
    target = make_target(12, 8, 4)
    m = build_weighting("mlp", 12, [tuple(p.shape) for p in target.parameters()], hidden=8)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    grads = []
    learner = OnlineGWNMO(target, m, ClassicConfig(schedule=schedule, lr=0.1), opt)
    original = opt.step

    def record():
        grads.append(torch.cat([p.grad.reshape(-1).clone() for p in m.parameters()]))
        original()

    opt.step = record
    for i in range(3):
        learner.step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    return grads


def test_alg1_and_alg2_meta_gradients_differ_online():
    g1, g2 = _meta_grads("alg1"), _meta_grads("alg2")
    assert len(g1) == 2 and len(g2) == 2  # first batch: nothing to judge yet
    # both judge the first update by the second batch's loss: the same meta-gradient ...
    assert g1[0].abs().sum() > 0 and torch.allclose(g1[0], g2[0])
    # ... but alg2's θ step lands before the second weighting, alg1's after it: they diverge from there
    assert not torch.allclose(g1[1], g2[1])


def test_reps_keep_the_weighting_network():
    cfg = ClassicConfig(optimizer="gwnmo", epochs=1, batch_size=32, hidden=8, reps=2, device="cpu")
    results = train_classic(cfg, progress=False, features=_features())
    assert [r.rep for r in results] == [0, 1]


def test_weighting_from_checkpoint_is_used(tiny_data_root, tmp_path):
    runner = CliRunner()
    run = tmp_path / "meta"
    res = runner.invoke(
        app,
        [
            "meta-train",
            "--data-root",
            str(tiny_data_root),
            "--backbone",
            "none",
            "--out",
            str(run),
            "--meta-steps",
            "2",
            "--val-every",
            "2",
            "--val-tasks",
            "4",
            "--query",
            "3",
            "--meta-batch",
            "1",
            "--inner-steps",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    base = [
        "train",
        "--data-root",
        str(tiny_data_root),
        "--backbone",
        "none",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--weighting",
        "coordinate",
        "--device",
        "cpu",
        "--freeze-weighting",
    ]
    res = runner.invoke(
        app, base + ["--weighting-from", str(run / "best.pt"), "--out", str(tmp_path / "a")]
    )
    assert res.exit_code == 0, res.output
    acc_a = res.output.split("best test accuracy")[1].split("%")[0]
    # the same checkpoint with a changed M must change the trajectory
    ckpt = torch.load(run / "best.pt", weights_only=False)
    for k in ckpt["method"]:
        if k.startswith("weighting.") and k.endswith("bias"):
            ckpt["method"][k] = ckpt["method"][k] + torch.linspace(
                -3, 3, ckpt["method"][k].numel()
            ).view_as(ckpt["method"][k])
    from gwnmo_meta.checkpoint import save_checkpoint

    ckpt.pop("format_version")
    save_checkpoint(tmp_path / "changed.pt", ckpt)
    res_b = runner.invoke(
        app, base + ["--weighting-from", str(tmp_path / "changed.pt"), "--out", str(tmp_path / "b")]
    )
    assert res_b.exit_code == 0, res_b.output
    import json

    a = json.loads((tmp_path / "a" / "results.json").read_text())["reps"][0]["final_loss"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["reps"][0]["final_loss"]
    assert a != b and acc_a


def test_weighting_from_incompatible_mlp_fails_cleanly(tiny_data_root, tmp_path):
    runner = CliRunner()
    run = tmp_path / "meta"
    runner.invoke(
        app,
        [
            "meta-train",
            "--data-root",
            str(tiny_data_root),
            "--backbone",
            "none",
            "--out",
            str(run),
            "--meta-steps",
            "1",
            "--val-every",
            "1",
            "--val-tasks",
            "2",
            "--query",
            "3",
            "--meta-batch",
            "1",
            "--inner-steps",
            "1",
            "--weighting",
            "mlp",
            "--device",
            "cpu",
        ],
    )
    res = runner.invoke(
        app,
        [
            "train",
            "--data-root",
            str(tiny_data_root),
            "--backbone",
            "none",
            "--epochs",
            "1",
            "--weighting",
            "mlp",
            "--weighting-from",
            str(run / "best.pt"),
            "--out",
            str(tmp_path / "t"),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 2 and "does not fit" in res.output


@pytest.mark.parametrize(
    "cfg, message",
    [
        (ClassicConfig(optimizer="rmsprop"), "unknown optimizer"),
        (ClassicConfig(epochs=0), "--epochs must be positive"),
        (ClassicConfig(optimizer="adam", weighting_from="x.pt"), "need --optimizer gwnmo"),
        (ClassicConfig(freeze_weighting=True), "needs --weighting-from"),
    ],
)
def test_bad_classic_configs(cfg, message):
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_classic_cli_bad_input_exit_2(tiny_data_root, tmp_path):
    res = CliRunner().invoke(
        app,
        ["train", "--optimizer", "adam", "--schedule", "alg2", "--data-root", str(tiny_data_root)],
    )
    assert res.exit_code == 2 and "--schedule applies" in res.output
