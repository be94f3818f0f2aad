"""Benchmark suites: equal tuning budgets, best-by-val selection, reports, resumability."""

import csv
import dataclasses
import json
from collections import Counter

import pytest

from gwnmo_meta.config import RunConfig
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.suites.grid import LR_GRIDS, build_suite, cell_id, run_suite, select_best
from tests.helpers import tiny_base


def test_main_suite_gives_every_variant_the_same_number_of_step_sizes():
    suite = build_suite("main")
    per_variant = Counter((c.dataset, c.shots, c.variant.name) for c in suite.cells)
    assert set(per_variant.values()) == {2}
    assert {v for _, _, v in per_variant} == {
        "gwnmo alg1",
        "gwnmo alg2",
        "gwnmo-prime alg1",
        "gwnmo-prime alg2",
        "maml",
        "meta-sgd",
        "hg",
        "sgd",
        "adam",
    }
    assert len(suite.cells) == 3 * 2 * 9 * 2
    for c in suite.cells:
        assert c.inner_lr in LR_GRIDS[c.method][:2]
        assert c.learn_init == (c.method not in ("sgd", "adam"))


def test_transfer_suite_evaluates_every_method_on_every_dataset():
    suite = build_suite("transfer")
    assert {c.method for c in suite.cells} == {"gwnmo", "sgd", "adam"}
    for c in suite.cells:
        assert c.eval_datasets == ("mnist", "fmnist", "cifar10")


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(methods=("bogus",)), "unknown method"),
        (dict(lr_values=4), "--lr-values"),
        ({}, "unknown suite"),
    ],
)
def test_bad_suite_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        build_suite("nope" if not kw else "quick", **kw)


def _record(variant, lr, val):
    return {
        "train_dataset": "mnist",
        "shots": 1,
        "variant": variant,
        "learn_init": True,
        "inner_lr": lr,
        "val_accuracy": val,
    }


def test_select_best_keeps_the_best_meta_val_cell_per_variant():
    recs = [
        _record("maml", 3.0, 0.5),
        _record("maml", 1.0, 0.7),
        _record("sgd", 3.0, 0.6),
        _record("sgd", 1.0, None),
    ]
    best = {r["variant"]: r["inner_lr"] for r in select_best(recs)}
    assert best == {"maml": 1.0, "sgd": 3.0}


def test_suite_runs_writes_reports_and_does_not_rerun_finished_cells(
    tiny_data_root, tmp_path, monkeypatch
):
    base = tiny_base(tiny_data_root, inner_steps=2)
    suite = build_suite(
        "quick",
        methods=("gwnmo", "sgd"),
        schedules=("alg2",),
        meta_steps=2,
        test_tasks=4,
        base=base,
    )
    rows, paths = run_suite(suite, tmp_path, progress=False)
    assert {r["variant"] for r in rows} == {"gwnmo alg2", "sgd"}
    for r in rows:
        assert 0.0 <= r["accuracy_mean"] <= 1.0 and r["tasks"] == 4
    names = {p.name for p in paths}
    assert {"results.csv", "results.json", "results.md", "accuracy.png", "curves.png"} <= names
    with open(tmp_path / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    assert json.loads((tmp_path / "results.json").read_text())["suite"] == "quick"
    assert "gwnmo alg2" in (tmp_path / "results.md").read_text()

    def must_not_train(*a, **k):
        raise AssertionError("a finished cell was re-run")

    monkeypatch.setattr("gwnmo_meta.training.trainer.meta_train", must_not_train)
    rows2, _ = run_suite(suite, tmp_path, progress=False)
    assert rows2 == rows


def test_weighting_hidden_reaches_m_and_keys_only_gwnmo_cells(tiny_data_root, tmp_path):
    base = tiny_base(tiny_data_root, inner_steps=1, meta_batch=1, weighting_hidden=8)
    suite = build_suite(
        "quick",
        methods=("gwnmo", "sgd"),
        schedules=("alg2",),
        meta_steps=1,
        test_tasks=2,
        base=base,
    )
    run_suite(suite, tmp_path, progress=False)
    cells = sorted(p.name for p in (tmp_path / "cells").iterdir())
    gwnmo = [c for c in cells if "gwnmo" in c]
    assert gwnmo and all("-m8-" in c for c in gwnmo)
    assert not any("-m8" in c for c in cells if "gwnmo" not in c)
    saved = json.loads((tmp_path / "cells" / gwnmo[0] / "config.json").read_text())
    assert saved["weighting_hidden"] == 8
    assert "weighting factored (hidden 8)" in (tmp_path / "results.md").read_text()


def test_weighting_hidden_sets_the_width_of_m_and_must_be_positive():
    import torch

    from gwnmo_meta.training.methods import MethodConfig, build_method

    m = build_method(MethodConfig(method="gwnmo", weighting_hidden=8), 16, 5, torch.device("cpu"))
    assert m.weighting.inp.out_features == 8
    with pytest.raises(ConfigError, match="--weighting-hidden"):
        RunConfig(weighting_hidden=0).validate()


def test_task_batch_keys_only_cells_it_changes(tiny_data_root, tmp_path):
    base = tiny_base(tiny_data_root, inner_steps=1, task_batch=True)
    suite = build_suite(
        "quick",
        methods=("gwnmo", "maml"),
        schedules=("alg2",),
        meta_steps=1,
        test_tasks=2,
        base=base,
    )
    run_suite(suite, tmp_path, progress=False)
    cells = sorted(p.name for p in (tmp_path / "cells").iterdir())
    gwnmo = [c for c in cells if "gwnmo" in c]
    assert gwnmo and all("-tb-" in c for c in gwnmo)
    assert not any("-tb" in c for c in cells if "maml" in c)
    assert (
        json.loads((tmp_path / "cells" / gwnmo[0] / "config.json").read_text())["task_batch"]
        is True
    )
    assert "task-batched inner loops" in (tmp_path / "results.md").read_text()
    assert RunConfig().task_batch  # the default; --no-task-batch cells carry no suffix:
    plain = build_suite(
        "quick",
        methods=("gwnmo",),
        schedules=("alg2",),
        meta_steps=1,
        test_tasks=2,
        base=dataclasses.replace(base, task_batch=False),
    )
    run_suite(plain, tmp_path / "plain", progress=False)
    assert [p.name for p in (tmp_path / "plain" / "cells").iterdir() if "-tb" in p.name] == []
    assert "one task at a time (--no-task-batch)" in (tmp_path / "plain" / "results.md").read_text()


def test_reference_rows_in_the_old_suites_are_scored_without_meta_training(
    tiny_data_root, tmp_path
):
    base = tiny_base(tiny_data_root)
    suite = build_suite("quick", methods=("prototype",), meta_steps=1, test_tasks=4, base=base)
    assert [cell_id(c) for c in suite.cells] == ["mnist-1shot-prototype"]
    rows, _ = run_suite(suite, tmp_path, progress=False)
    (row,) = rows
    assert row["variant"] == "prototype" and row["inner_lr"] is None and row["tasks"] == 4
    assert not list((tmp_path / "cells").glob("*/*.pt"))  # nothing was meta-trained
    assert "| prototype | – |" in (tmp_path / "results.md").read_text()
