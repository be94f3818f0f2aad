"""Classic training mode: each optimizer, Algorithms 1/2 online, reusing a meta-trained M."""

import pytest
import torch
from typer.testing import CliRunner

import gwnmo_meta.training.classic as classic
import gwnmo_meta.training.classic_run as classic_run
from gwnmo_meta.cli.app import app
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.optim.nets import build_weighting
from gwnmo_meta.training.classic import (
    OPTIMIZERS,
    ClassicConfig,
    EpochRecord,
    OnlineGWNMO,
    RepResult,
    make_target,
    split_validation,
    train_classic,
)


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


def test_online_meta_gradient_matches_plain_autograd():
    """The first judged update's meta-gradient, ∇_θ L(φ_0 − αΔ(θ; X_0); X_1), built here in plain
    autograd (two target forwards, no shared work), equals what OnlineGWNMO feeds M's optimizer."""
    from torch.func import functional_call

    from gwnmo_meta.optim.direction import gwnmo_direction

    torch.manual_seed(0)
    x, y, _, _ = _features()
    x = x.double()
    target = make_target(12, 8, 4).double()
    m = build_weighting("factored", 12, [tuple(p.shape) for p in target.parameters()], hidden=8)
    m = m.double()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    phi0 = {n: p.detach().clone() for n, p in target.named_parameters()}
    theta = dict(m.named_parameters())
    x0, y0, x1, y1 = x[:16], y[:16], x[16:32], y[16:32]
    leaf = {n: p.clone().requires_grad_(True) for n, p in phi0.items()}
    loss0 = torch.nn.functional.cross_entropy(functional_call(target, leaf, (x0,)), y0)
    g0 = [g.detach() for g in torch.autograd.grad(loss0, list(leaf.values()))]
    h = [torch.sigmoid(r) for r in m(x0, list(phi0.values()), g0)]
    delta = gwnmo_direction(g0, h)
    phi1 = {n: p - 0.1 * d for (n, p), d in zip(phi0.items(), delta, strict=True)}
    loss1 = torch.nn.functional.cross_entropy(functional_call(target, phi1, (x1,)), y1)
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss1, list(theta.values()))])

    recorded = []
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # records the gradient, leaves θ as it is
    opt.step = lambda: recorded.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    learner = OnlineGWNMO(target, m, ClassicConfig(weighting="factored", lr=0.1), opt)
    learner.step(x0, y0)
    learner.step(x1, y1)
    assert len(recorded) == 1 and expected.abs().sum() > 0
    torch.testing.assert_close(recorded[0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("base", ["grad", "momentum", "adam"])
@pytest.mark.parametrize("optimizer", ["gwnmo", "gwnmo-prime"])
def test_factored_fused_step_matches_the_per_coordinate_step(base, optimizer):
    """The factored M steps fused (one weight per row, ``unit_step``); the same run through M's
    per-coordinate output and ``gwnmo_direction`` (the path the plain-autograd test checks) gives
    the same φ and the same meta-gradients, over every base direction, in float64."""
    from gwnmo_meta.optim.direction import Base

    def run(fused):
        torch.manual_seed(0)
        x, y, _, _ = _features()
        x = x.double()
        target = make_target(12, 8, 4).double()
        shapes = [tuple(p.shape) for p in target.parameters()]
        inputs = Base(base).state_inputs
        m = build_weighting("factored", 12, shapes, hidden=8, state_inputs=inputs).double()
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2)
        recorded = []
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        step = opt.step
        opt.step = lambda: (recorded.append([p.grad.clone() for p in m.parameters()]), step())
        cfg = ClassicConfig(optimizer=optimizer, weighting="factored", base=base, lr=0.1)
        learner = OnlineGWNMO(target, m, cfg, opt)
        assert learner._fused is not None
        if not fused:
            learner._fused = None
        for i in range(4):
            learner.step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
        return learner.current(), recorded

    (phi_a, grads_a), (phi_b, grads_b) = run(True), run(False)
    assert len(grads_a) == 3
    torch.testing.assert_close(phi_a, phi_b, rtol=1e-9, atol=1e-12)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-8, atol=1e-12)


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
            "--weighting",
            "coordinate",
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
    acc_a = res.output.split("best test over epochs (thesis practice)")[1].split("%")[0]
    # the same checkpoint with a changed M must change the trajectory
    ckpt = torch.load(run / "best.pt", weights_only=False)
    for k in ckpt["method"]:
        if k.startswith("weighting.") and k.endswith("bias"):
            ckpt["method"][k] = ckpt["method"][k] + torch.linspace(
                -3, 3, ckpt["method"][k].numel()
            ).view_as(ckpt["method"][k])
    from gwnmo_meta.io.checkpoint import save_checkpoint

    ckpt.pop("format_version")
    save_checkpoint(tmp_path / "changed.pt", ckpt)
    res_b = runner.invoke(
        app, base + ["--weighting-from", str(tmp_path / "changed.pt"), "--out", str(tmp_path / "b")]
    )
    assert res_b.exit_code == 0, res_b.output
    import json

    rep_a = json.loads((tmp_path / "a" / "results.json").read_text())["reps"][0]
    assert "(best val accuracy" in res.output  # the CLI reports test at best val and best test
    assert rep_a["selected_epoch"] == 1 and rep_a["test_accuracy_at_best_val"] is not None
    a = rep_a["final_test_loss"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["reps"][0]["final_test_loss"]
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


def test_split_validation_is_stratified_seeded_and_disjoint():
    labels = torch.arange(4).repeat_interleave(torch.tensor([20, 30, 10, 40]))
    train, val = split_validation(labels, 0.1, seed=3)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[val], minlength=4).tolist() == [2, 3, 1, 4]
    again, other = (
        split_validation(labels, 0.1, seed=3)[1],
        split_validation(labels, 0.1, seed=4)[1],
    )
    assert torch.equal(val, again) and not torch.equal(val, other)


def test_validation_images_are_held_out_of_training_and_scored_each_epoch(monkeypatch):
    xtr, ytr, xte, yte = _features(n=300)
    xtr = xtr + torch.arange(len(xtr)).unsqueeze(1) * 1e-3  # every row unique
    seen, scored = [], []
    step, evaluate = classic.TorchLearner.step, classic.evaluate_target
    monkeypatch.setattr(
        classic.TorchLearner, "step", lambda self, x, y: seen.append(x) or step(self, x, y)
    )
    monkeypatch.setattr(
        classic_run,
        "evaluate_target",
        lambda t, p, x, y: scored.append(x) or evaluate(t, p, x, y),
    )
    cfg = ClassicConfig(optimizer="sgd", epochs=2, batch_size=32, hidden=8, lr=0.5, seed=5)
    (res,) = train_classic(cfg, progress=False, features=(xtr, ytr, xte, yte))
    _, val_idx = split_validation(ytr, cfg.val_fraction, cfg.seed)
    rows = lambda t: {tuple(r) for r in t.tolist()}  # noqa: E731
    trained, val = rows(torch.cat(seen)), rows(xtr[val_idx])
    assert len(val) == 20 and trained.isdisjoint(val) and val.isdisjoint(rows(xte))
    assert trained | val == rows(xtr)  # the rest of the train split is trained on
    assert [rows(x) for x in scored] == [rows(xte), val] * 2  # test and val after every epoch
    assert all(e.val_accuracy is not None for e in res.epochs)


def test_selection_uses_validation_not_test_accuracy():
    rep = RepResult(0)
    for epoch, (val, test) in enumerate([(0.5, 0.6), (0.8, 0.7), (0.7, 0.9), (0.8, 0.8)], 1):
        rep.epochs.append(EpochRecord(epoch, 1.0, test, 1 - test, val, 1 - val + 0.01 * epoch))
    assert rep.selected.epoch == 2  # best val (tie with epoch 4 broken by the lower val loss)
    d = rep.to_dict()
    assert d["test_accuracy_at_best_val"] == 0.7 and d["best_test_accuracy"] == 0.9
    assert d["selected_val_accuracy"] == 0.8 and d["final_test_accuracy"] == 0.8


def test_no_validation_split_reports_only_test_selection():
    cfg = ClassicConfig(optimizer="adam", epochs=1, hidden=8, lr=0.01, val_fraction=0)
    (res,) = train_classic(cfg, progress=False, features=_features())
    assert res.selected is None and res.to_dict()["test_accuracy_at_best_val"] is None
    assert "no validation split" in res.summary()
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="--val-fraction"):
            ClassicConfig(val_fraction=bad).validate()
