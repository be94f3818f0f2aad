"""The Typer CLI end to end on tiny on-disk data: meta-train, evaluate, resume, bad input."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gwnmo_meta.cli.app import app

runner = CliRunner()
BASE = [
    "--backbone",
    "none",
    "--meta-batch",
    "2",
    "--val-tasks",
    "10",
    "--query",
    "3",
    "--inner-steps",
    "2",
    "--device",
    "cpu",
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def meta_train(root, out, *extra):
    return invoke("meta-train", "--data-root", root, "--out", out, *BASE, *extra)


def event_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for f in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        t = acc.Tags()
        tags |= set(t["scalars"]) | set(t["histograms"])
        try:
            tags |= {f"hparams:{k}" for k in acc.PluginTagToContent("hparams")}
        except KeyError:
            pass
    return tags


@pytest.fixture(scope="module")
def trained_run(tiny_data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gwnmo"
    res = meta_train(
        tiny_data_root, out, "--meta-steps", "6", "--val-every", "3", "--test-tasks", "5"
    )
    assert res.exit_code == 0, res.output
    return out, res


def test_meta_train_writes_checkpoints_config_and_events(trained_run):
    out, res = trained_run
    assert {"best.pt", "last.pt", "config.json", "test.json"} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "gwnmo" and cfg["meta_steps"] == 6 and cfg["backbone"] == "none"
    tags = event_tags(out)
    for tag in (
        "meta-train/loss",
        "meta-train/accuracy",
        "meta-val/accuracy",
        "meta-val/accuracy_ci95",
        "inner/loss_step0",
        "gwnmo/h_mean",
        "gwnmo/h_std",
        "gwnmo/cos_delta_g",
        "gwnmo/delta_over_g",
        "gwnmo/step_ratio_weight",
        "gwnmo/step_ratio_bias",
        "gwnmo/bias_share",
        "gwnmo/effective_coords",
        "lr/meta",
        "lr/inner",
        "speed/tasks_per_s",
        "gwnmo/h",
        "hparam/best_val_accuracy",
    ):
        assert tag in tags, (tag, sorted(tags))
    assert any(t.startswith("params/weighting.") for t in tags)
    assert "hparams:_hparams_/experiment" in tags and "hparams:_hparams_/session_start_info" in tags
    assert "meta-test" in res.output


def test_evaluate_writes_documented_json(trained_run, tiny_data_root, tmp_path):
    out, _ = trained_run
    path = tmp_path / "eval.json"
    res = invoke(
        "evaluate",
        out / "best.pt",
        "--data-root",
        tiny_data_root,
        "--tasks",
        "8",
        "--json",
        path,
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    body = json.loads(path.read_text())
    for key in ("accuracy_mean", "accuracy_ci95", "loss_mean", "tasks", "dataset", "ways", "shots"):
        assert key in body
    assert body["tasks"] == 8 and body["dataset"] == "mnist" and body["ways"] == 5
    assert (
        0.0 <= body["accuracy_mean"] <= 1.0 and body["accuracy_ci95"] >= 0 and body["loss_mean"] > 0
    )
    assert "±" in res.output


def test_evaluate_cross_dataset(trained_run, tiny_data_root):
    out, _ = trained_run
    res = invoke(
        "evaluate",
        out / "best.pt",
        "--data-root",
        tiny_data_root,
        "--dataset",
        "fmnist",
        "--tasks",
        "4",
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    assert "fmnist 5-way 1-shot, gwnmo: accuracy" in res.output


def test_resume_reaches_same_state_as_uninterrupted_run(tiny_data_root, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert meta_train(tiny_data_root, full, "--meta-steps", "6", "--val-every", "3").exit_code == 0
    assert meta_train(tiny_data_root, part, "--meta-steps", "3", "--val-every", "3").exit_code == 0
    res = meta_train(tiny_data_root, part, "--meta-steps", "6", "--val-every", "3", "--resume")
    assert res.exit_code == 0, res.output
    a = torch.load(full / "last.pt", weights_only=False)
    b = torch.load(part / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for k in a["method"]:
        assert torch.equal(a["method"][k], b["method"][k]), k
    assert a["best_val_accuracy"] == b["best_val_accuracy"]


def test_keyboard_interrupt_checkpoints_and_resumes(tiny_data_root, tmp_path, monkeypatch):
    import gwnmo_meta.training.trainer as trainer
    from gwnmo_meta.config import RunConfig

    cfg = RunConfig(
        data_root=str(tiny_data_root),
        backbone="none",
        meta_batch=2,
        val_tasks=5,
        query=3,
        inner_steps=2,
        meta_steps=5,
        val_every=5,
        device="cpu",
    )

    def interrupt(step):
        if step == 2:
            raise KeyboardInterrupt

    result = trainer.meta_train(cfg, tmp_path / "run", progress=False, on_step=interrupt)
    assert result.interrupted and result.steps_done == 2
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 2
    resumed = trainer.meta_train(cfg, tmp_path / "run", resume=True, progress=False)
    assert resumed.steps_done == 5 and not resumed.interrupted


@pytest.mark.parametrize("batched", [True, False])
def test_nan_meta_loss_stops_and_keeps_last_good_checkpoint(
    tiny_data_root, tmp_path, monkeypatch, batched
):
    from gwnmo_meta.training import inner_loops as schedules

    flag = "--task-batch" if batched else "--no-task-batch"
    good = meta_train(
        tiny_data_root, tmp_path / "run", "--meta-steps", "2", "--val-every", "2", flag
    )
    assert good.exit_code == 0
    before = (tmp_path / "run" / "last.pt").read_bytes()
    real_one, real_many = schedules.run_episode, schedules.run_episodes

    def poisoned_one(*args, **kwargs):
        out = real_one(*args, **kwargs)
        if out.meta_loss is not None:
            out.meta_loss = out.meta_loss * float("nan")
        return out

    def poisoned_many(*args, **kwargs):  # only the back-propagated batch loss turns NaN
        loss, outs = real_many(*args, **kwargs)
        return (None if loss is None else loss * float("nan")), outs

    monkeypatch.setattr("gwnmo_meta.training.methods.run_episode", poisoned_one)
    monkeypatch.setattr("gwnmo_meta.training.methods.run_episodes", poisoned_many)
    res = meta_train(
        tiny_data_root, tmp_path / "run", "--meta-steps", "4", "--val-every", "2", "--resume", flag
    )
    assert res.exit_code == 1
    assert "nan" in res.output.lower() and "Traceback" not in res.output
    assert (
        "meta-step 3" in res.output
    )  # caught at the first poisoned step, before the meta-optimizer steps
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["meta-train", "--dataset", "svhn"], "Invalid value"),
        (["meta-train", "--method", "reptile"], "Invalid value"),
        (["meta-train", "--ways", "0"], "--ways must be positive"),
        (["meta-train", "--method", "adam", "--learn-lr", "tensor"], "--learn-lr applies to"),
        (["meta-train", "--ways", "7"], "exceeds"),
        (["meta-train", "--shots", "30", "--query", "30"], "fewer than --shots + --query"),
        (["meta-train", "--train-classes", "0-5", "--test-classes", "5-9"], "overlap"),
    ],
)
def test_bad_input_exits_2_with_message(tiny_data_root, tmp_path, args, message):
    res = invoke(
        *args,
        "--data-root",
        tiny_data_root,
        "--out",
        tmp_path / "r",
        "--backbone",
        "none",
        "--meta-steps",
        "1",
        "--device",
        "cpu",
    )
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_missing_data_and_bad_checkpoints_exit_2(tmp_path):
    res = invoke(
        "meta-train", "--data-root", tmp_path / "empty", "--out", tmp_path / "r", "--device", "cpu"
    )
    assert (
        res.exit_code == 2 and "--data-root" in res.output and str(tmp_path / "empty") in res.output
    )
    res = invoke("evaluate", tmp_path / "missing.pt")
    assert res.exit_code == 2 and "not found" in res.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = invoke("evaluate", bad)
    assert res.exit_code == 2 and "corrupt" in res.output


def test_unwritable_out_and_absent_cuda_exit_2(tiny_data_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = meta_train(tiny_data_root, blocker / "sub", "--meta-steps", "1")
    assert res.exit_code == 2 and "cannot write" in res.output
    if not torch.cuda.is_available():
        res = invoke(
            "meta-train", "--data-root", tiny_data_root, "--out", tmp_path / "r", "--device", "cuda"
        )
        assert res.exit_code == 2 and "no CUDA" in res.output


def test_existing_run_needs_resume_and_resume_checks_options(trained_run, tiny_data_root):
    out, _ = trained_run
    res = meta_train(tiny_data_root, out, "--meta-steps", "6")
    assert res.exit_code == 2 and "--resume" in res.output
    res = meta_train(
        tiny_data_root, out, "--meta-steps", "8", "--val-every", "3", "--ways", "4", "--resume"
    )
    assert res.exit_code == 2 and "ways" in res.output


def test_evaluate_with_incompatible_ways(trained_run, tiny_data_root):
    out, _ = trained_run
    res = invoke(
        "evaluate",
        out / "best.pt",
        "--data-root",
        tiny_data_root,
        "--ways",
        "3",
        "--tasks",
        "2",
        "--device",
        "cpu",
    )
    assert res.exit_code == 2 and "5-way" in res.output


def test_task_batch_run_tracks_one_task_at_a_time_and_can_be_switched_on_resume(
    tiny_data_root, tmp_path
):
    one, many = tmp_path / "one", tmp_path / "many"
    assert (
        meta_train(
            tiny_data_root, one, "--meta-steps", "4", "--val-every", "2", "--no-task-batch"
        ).exit_code
        == 0
    )
    assert (
        meta_train(
            tiny_data_root, many, "--meta-steps", "2", "--val-every", "2", "--no-task-batch"
        ).exit_code
        == 0
    )
    res = meta_train(
        tiny_data_root, many, "--meta-steps", "4", "--val-every", "2", "--resume"
    )  # default: batched
    assert res.exit_code == 0, res.output
    assert json.loads((many / "config.json").read_text())["task_batch"] is True
    a = torch.load(one / "last.pt", weights_only=False)
    b = torch.load(many / "last.pt", weights_only=False)
    assert [r["meta_loss"] for r in a["history"]] == pytest.approx(
        [r["meta_loss"] for r in b["history"]], rel=1e-3
    )
    assert [r["val_accuracy"] for r in a["history"]] == pytest.approx(
        [r["val_accuracy"] for r in b["history"]], abs=1e-6
    )
    assert event_tags(many) == event_tags(one)  # same scalars, histograms (h per task) and hparams


def test_meta_train_offers_only_the_methods_it_trains():
    res = invoke("meta-train", "--help")
    assert "gwnmo" in res.output and "prototype" not in res.output and "logreg" not in res.output
    res = invoke("meta-train", "--method", "prototype")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "prototype" in res.output
