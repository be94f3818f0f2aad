"""Per-step query curves, paired intervals, and evaluation without a checkpoint."""

import json
import math

import pytest
import torch

from gwnmo_meta.evaluation.evaluate import evaluate_tasks
from gwnmo_meta.evaluation.stats import paired_diff_ci95
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import synthetic_fewshot
from gwnmo_meta.training.methods import MethodConfig, build_method


@pytest.mark.parametrize(
    "method, task_batch",
    [("gwnmo", True), ("gwnmo", False), ("sgd", True), ("maml", False), ("meta-sgd", False)],
)
def test_step_curves_start_at_the_init_and_end_at_the_final_query_metrics(method, task_batch):
    data = synthetic_fewshot(num_classes=10, per_class=20, dim=6, noise=2.0)
    steps = 3
    cfg = MethodConfig(method=method, inner_steps=steps, inner_lr=0.5, task_batch=task_batch)
    m = build_method(cfg, 6, 5)
    eps = [data.sampler("test", TaskSpec(5, 2, 4), seed=s).sample() for s in range(3)]
    _, outs = m.episodes(eps, train=False)
    head = m.learner.module if method in ("maml", "meta-sgd") else m.head
    for ep, o in zip(eps, outs, strict=True):
        assert len(o.step_query_acc) == len(o.step_query_loss) == steps + 1
        assert o.step_query_acc[-1] == o.query_acc and o.step_query_loss[-1] == o.query_loss
        with torch.no_grad():
            logits0 = head(ep.query_x)
        loss0 = torch.nn.functional.cross_entropy(logits0, ep.query_y).item()
        assert o.step_query_loss[0] == pytest.approx(loss0, rel=1e-5)
        assert o.step_query_loss[0] != pytest.approx(o.step_query_loss[-1])  # it adapted
    # training keeps no curves (nothing spent on them)
    _, outs = m.episodes(eps, train=True)
    assert all(o.step_query_acc == [] for o in outs)


def test_evaluate_tasks_reports_mean_curves_per_task_scores_and_a_task_digest():
    data = synthetic_fewshot(num_classes=10, per_class=20, dim=6, noise=2.0)
    m = build_method(MethodConfig(method="sgd", inner_steps=2, learn_init=False), 6, 5)
    spec = TaskSpec(5, 1, 3)
    s = evaluate_tasks(m, data.sampler("test", spec, 7), 10, progress=False, task_batch=4)
    assert len(s.step_accuracy) == 3 and s.step_accuracy[-1] == pytest.approx(s.accuracy.mean)
    assert s.step_loss[-1] == pytest.approx(s.loss.mean)
    assert len(s.task_accuracies) == 10
    assert math.fsum(s.task_accuracies) / 10 == pytest.approx(s.accuracy.mean)
    p = build_method(MethodConfig(method="prototype"), 6, 5)
    s2 = evaluate_tasks(p, data.sampler("test", spec, 7), 10, progress=False, task_batch=3)
    s3 = evaluate_tasks(p, data.sampler("test", spec, 8), 10, progress=False)
    assert s2.tasks_digest == s.tasks_digest != s3.tasks_digest
    assert len(s2.step_accuracy) == 1


def test_paired_diff_ci95_against_a_hand_computation():
    a = [0.8, 0.6, 0.9, 0.7]
    b = [0.7, 0.6, 0.6, 0.5]
    # d = [0.1, 0.0, 0.3, 0.2]: mean 0.15, sample sd sqrt(0.05/3), t_{0.975,3} = 3.182446305
    d = paired_diff_ci95(a, b)
    assert d.mean == pytest.approx(0.15)
    assert d.ci95 == pytest.approx(3.182446305 * math.sqrt(0.05 / 3) / 2, rel=1e-8)
    assert d.n == 4 and not d.significant  # CI [-0.055, 0.355] contains 0
    # unpaired intervals of a and b overlap, yet a consistent per-task gain is significant paired
    shift = paired_diff_ci95([x + 0.1 for x in b[:3]] + [0.6], b)
    assert shift.significant and shift.mean == pytest.approx(0.1)
    same = paired_diff_ci95([0.5, 0.7, 0.6], [0.6, 0.6, 0.6])
    assert same.mean == pytest.approx(0.0, abs=1e-12) and not same.significant
    with pytest.raises(ValueError, match="equal lengths"):
        paired_diff_ci95([1.0], [1.0, 2.0])


def test_evaluate_method_without_checkpoint_gives_checkpoint_keys(tiny_data_root, tmp_path):
    from typer.testing import CliRunner

    from gwnmo_meta.cli.app import app

    runner = CliRunner()
    common = ["--data-root", str(tiny_data_root), "--backbone", "none", "--query", "3"]
    path = tmp_path / "p.json"
    res = runner.invoke(
        app, ["evaluate", "--method", "prototype", "--tasks", "5", *common, "--json", str(path)]
    )
    assert res.exit_code == 0, res.output
    got = json.loads(path.read_text())
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.training.trainer import meta_train

    run = tmp_path / "run"
    meta_train(
        RunConfig(
            data_root=str(tiny_data_root),
            backbone="none",
            query=3,
            meta_steps=1,
            val_every=1,
            val_tasks=2,
            inner_steps=1,
            device="cpu",
        ),
        run,
        progress=False,
    )
    ck = tmp_path / "c.json"
    res = runner.invoke(app, ["evaluate", str(run / "best.pt"), "--tasks", "5", "--json", str(ck)])
    assert res.exit_code == 0, res.output
    ref = json.loads(ck.read_text())
    assert set(got) == set(ref)
    assert got["checkpoint"] is None and got["method"] == "prototype"
    assert got["tasks_digest"] == ref["tasks_digest"]  # the same meta-test tasks
    assert len(got["task_accuracies"]) == 5 and len(ref["step_accuracy_mean"]) == 2
    for argv, msg in [
        (["evaluate", "--method", "maml", *common], "meta-learns"),
        (["evaluate", *common], "give a checkpoint"),
        (["evaluate", str(run / "best.pt"), "--method", "logreg"], "not both"),
    ]:
        res = runner.invoke(app, argv)
        assert res.exit_code == 2 and "error:" in res.output and msg in res.output, res.output
