"""The CLI on the pooled source: gwnmo-meta splits, meta-train/evaluate on mixed, class-disjoint meta-val."""

import json
import math

import pytest

import gwnmo_meta.tasks.fewshot as fewshot
from gwnmo_meta.tasks.backbones import Conv4
from tests.test_cli import BASE, invoke

SOURCES = ("mnist", "fmnist", "cifar10")


def splits(root, *args):
    res = invoke("splits", "--data-root", root, "--skip-integrity-check", *args)
    return res, (json.loads(res.stdout) if res.exit_code == 0 and "--json" in args else None)


def _sources(names):
    return {n.split(":")[0] for n in names}


@pytest.mark.parametrize("held_out", [None, *SOURCES])
def test_splits_json(tiny_data_root, held_out):
    extra = () if held_out is None else ("--test-dataset", held_out)
    res, out = splits(tiny_data_root, "--dataset", "mixed", "--json", *extra)
    assert res.exit_code == 0, res.output
    parts = out["parts"]
    names = {p: set(parts[p]["classes"]) for p in ("train", "val", "test")}
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    for info in parts.values():
        assert info["class_sets"] == math.comb(len(info["classes"]), 5) and info["images"] > 0
    assert parts["test"]["class_sets"] >= 100
    if held_out is None:
        assert all(_sources(names[p]) == set(SOURCES) for p in names)
    else:
        assert names["test"] == {f"{held_out}:{c}" for c in range(10)}
        assert _sources(names["train"]) == _sources(names["val"]) == set(SOURCES) - {held_out}


def test_splits_text_and_single_dataset_val_classes(tiny_data_root):
    res, _ = splits(tiny_data_root, "--dataset", "mixed", "--ways", "3")
    assert res.exit_code == 0, res.output
    assert "meta-test: 9 classes" in res.stdout and f"{math.comb(9, 3)} class sets" in res.stdout
    assert "cifar10:7" in res.stdout
    res, out = splits(
        tiny_data_root, "--train-classes", "0-2", "--val-classes", "mnist:3,4", "--json"
    )
    assert res.exit_code == 0, res.output
    assert out["parts"]["val"]["classes"] == ["mnist:3", "mnist:4"]
    assert out["parts"]["train"]["classes"] == ["mnist:0", "mnist:1", "mnist:2"]
    assert out["val_from_train_classes"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "mnist", "--test-dataset", "cifar10"], "needs --dataset mixed"),
        (["--dataset", "mixed", "--train-classes", "3"], "dataset:class"),
        (["--dataset", "mixed", "--test-dataset", "mnist", "--test-classes", "mnist"], "combine"),
        (["--dataset", "mixed", "--test-classes", "cifar10:0-7"], "overlap on classes [cifar10:0"),
    ],
)
def test_splits_bad_input_exits_2(tiny_data_root, args, message):
    res, _ = splits(tiny_data_root, *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_meta_train_and_evaluate_leave_one_dataset_out(tiny_data_root, tmp_path):
    out = tmp_path / "run"
    res = invoke(
        "meta-train",
        "--data-root",
        tiny_data_root,
        "--skip-integrity-check",
        "--out",
        out,
        *BASE,
        "--dataset",
        "mixed",
        "--test-dataset",
        "cifar10",
        "--meta-steps",
        "2",
        "--val-every",
        "2",
        "--test-tasks",
        "3",
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["test_dataset"] == "cifar10"
    test = json.loads((out / "test.json").read_text())
    assert test["dataset"] == "mixed" and test["test_dataset"] == "cifar10"
    res = invoke("evaluate", out / "best.pt", "--tasks", "3", "--device", "cpu")
    assert res.exit_code == 0 and "mixed (meta-test: cifar10)" in res.stdout, res.output
    # another dataset would score classes the checkpoint was meta-trained on
    res = invoke("evaluate", out / "best.pt", "--dataset", "mnist", "--tasks", "3")
    assert res.exit_code == 2 and "shares classes" in res.output, res.output


def test_single_dataset_class_disjoint_val_end_to_end(tiny_data_root, tmp_path, monkeypatch):
    seen = []

    def spy(images, labels, classes, **kw):  # records what pre-training sees; skips the training
        seen.append((set(labels.tolist()), tuple(classes)))
        return Conv4().eval()

    monkeypatch.setattr(fewshot, "pretrain_conv4", spy)
    args = [a for a in BASE if a != "none"]
    args.remove("--backbone")
    res = invoke(
        "meta-train",
        "--data-root",
        tiny_data_root,
        "--out",
        tmp_path / "run",
        *args,
        "--train-classes",
        "0-2",
        "--val-classes",
        "3,4",
        "--ways",
        "2",
        "--meta-steps",
        "2",
        "--val-every",
        "2",
    )
    assert res.exit_code == 0, res.output
    assert seen == [({0, 1, 2}, (0, 1, 2))]  # conv4 never sees a meta-val (or meta-test) class
