"""The CLI's defaults are the settings the committed benchmarks selected (issue 19).

Each test reads the selection from the committed benchmark outputs under benchmarks/ (never from
gwnmo_meta/defaults.py), so editing a default without re-running its benchmark fails here.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from pathlib import Path

import pytest
import typer.main

from gwnmo_meta.cli.app import app
from gwnmo_meta.config import RunConfig
from gwnmo_meta.training.classic import OPTIMIZERS, ClassicConfig
from gwnmo_meta.training.methods import MethodConfig

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def cli_default(command: str, flag: str):
    """The default of ``gwnmo-meta COMMAND FLAG`` as the CLI declares it (``benchmark grid``)."""
    cmd = typer.main.get_command(app)
    for name in command.split():
        cmd = cmd.commands[name]
    (param,) = [p for p in cmd.params if flag in p.opts]
    return param.default


def _json(path: str):
    return json.loads((BENCH / path).read_text())


# ---- classic: gwnmo-meta train vs benchmarks/classic/results.json ------------------------------
CLASSIC = _json("classic/results.json")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_classic_step_size_is_the_scans_selection(optimizer):
    scan = [r for r in CLASSIC["lr_scan"] if r["optimizer"] == optimizer]
    best = max(scan, key=lambda r: r["mean_val"])  # recomputed from the scan's rows
    assert best["lr"] == CLASSIC["selected_lr"][optimizer]
    assert cli_default("train", "--lr") is None  # --lr unset: the optimizer's default α
    assert ClassicConfig(optimizer=optimizer).step_size == best["lr"]


@pytest.mark.parametrize("base", ["adam", "momentum"])
def test_classic_step_size_over_a_base_is_the_scans_selection(base):
    scan = [r for r in CLASSIC["lr_scan"] if r["optimizer"] == f"gwnmo+{base}"]
    best = max(scan, key=lambda r: r["mean_val"])
    assert best["lr"] == CLASSIC["selected_lr"][f"gwnmo+{base}"]
    assert ClassicConfig(optimizer="gwnmo", base=base).step_size == best["lr"]


def test_classic_meta_lr_hg_beta_and_val_split_are_the_tables():
    rows = [r for r in CLASSIC["rows"] if r["table"] in ("table1", "table2")]
    assert {r["meta_lr"] for r in rows} == {cli_default("train", "--meta-lr")}
    hg = {r["hg_beta"] for r in rows if r["optimizer"] == "hg"}
    assert hg == {cli_default("train", "--hg-beta")}
    assert cli_default("train", "--val-fraction") == CLASSIC["val_fraction"]
    assert all(r["epochs"] == cli_default("train", "--epochs") for r in rows)
    cfg = ClassicConfig()
    assert (cfg.meta_lr, cfg.hg_beta, cfg.val_fraction) == (
        cli_default("train", "--meta-lr"),
        cli_default("train", "--hg-beta"),
        cli_default("train", "--val-fraction"),
    )


# ---- few-shot: gwnmo-meta meta-train vs the main table and the fine-tuning lr scan ----------
MAIN = _json("main/results.json")


@pytest.mark.parametrize("method", sorted({r["method"] for r in MAIN["rows"]}))
def test_inner_step_size_is_the_main_tables_selection(method):
    chosen = Counter(r["inner_lr"] for r in MAIN["rows"] if r["method"] == method)
    assert cli_default("meta-train", "--inner-lr") is None  # unset: the method's default α
    assert MethodConfig(method=method).lr == chosen.most_common(1)[0][0]


@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_fine_tuning_step_size_is_the_lr_scans_selection(method):
    rows = [
        r
        for p in sorted((BENCH / "lr_scan").glob("*.json"))
        for r in json.loads(p.read_text())
        if r["method"] == method and r["part"] == "val"
    ]
    lrs = sorted({r["inner_lr"] for r in rows})
    mean_val = {
        lr: statistics.mean(r["accuracy_mean"] for r in rows if r["inner_lr"] == lr) for lr in lrs
    }
    assert MethodConfig(method=method).lr == max(lrs, key=mean_val.get)


# ---- --adapt all: meta-train vs the end-to-end study's seed-0 grids --------------------------
# method → (regime, row) of benchmarks/study/<regime>-1shot whose seed-0 meta-val selected its
# --adapt all step size (GWNMO's row runs its default schedule, alg2; SGD's and Adam's are
# fine-tuning)
STUDY_ROWS = {
    "adam": ("fixed", "adam"),
    "gwnmo": ("learned", "gwnmo_alg2-4d4a27"),
    "maml": ("learned", "maml"),
    "meta-sgd": ("learned", "meta-sgd"),
    "sgd": ("fixed", "sgd"),
}


@pytest.mark.parametrize("method", sorted(STUDY_ROWS))
def test_adapt_all_step_size_is_the_studys_selection(method):
    regime, row = STUDY_ROWS[method]
    cell = re.compile(rf"^mixed-1shot-{re.escape(row)}-{regime}-lr([0-9.e-]+)-s0$")
    grid = {
        float(m[1]): json.loads((path / "val.json").read_text())["val_accuracy"]
        for path in (BENCH / "study" / f"{regime}-1shot" / "cells").iterdir()
        if (m := cell.match(path.name))
    }
    best = max(grid, key=grid.get)
    assert min(grid) < best < max(grid)  # bracketed on both sides
    assert MethodConfig(method=method, adapt="all").lr == best
    if method == "gwnmo":
        assert RunConfig(method="gwnmo").schedule_name == "alg2"


def test_meta_lr_and_m_width_are_the_committed_tables():
    assert cli_default("meta-train", "--meta-lr") == MAIN["base"]["meta_lr"] == RunConfig().meta_lr
    width = _json("quick/results.json")["base"]["weighting_hidden"]
    assert cli_default("meta-train", "--weighting-hidden") == width == RunConfig().weighting_hidden
    assert cli_default("benchmark grid", "--weighting-hidden") == width
    assert cli_default("benchmark protocol", "--weighting-hidden") == width
    assert MethodConfig().meta_lr == RunConfig().meta_lr
    assert MethodConfig().weighting_hidden == RunConfig().weighting_hidden


def test_default_weighting_is_the_one_the_paired_comparisons_chose():
    """factored is the default M because it measured no worse than the per-coordinate M at every
    target size (the paired difference's CI reaches or exceeds 0 in each committed comparison)."""
    linear = _json("endtoend/factored-vs-coordinate-mnist-1shot-steps200.json")
    diffs = [linear["factored_minus_coordinate"]]
    for cell in ("factored-134k", "factored-conv4"):
        (group,) = _json(f"endtoend/{cell}/results.json")["groups"]
        (pair,) = [p for p in group["pairs"] if "coordinate" in p["b"]]
        diffs.append(pair)
    assert all(d["mean"] + d["ci95"] >= 0 for d in diffs)
    assert sum(d["mean"] - d["ci95"] > 0 for d in diffs) >= 1  # better somewhere, not just equal
    assert cli_default("meta-train", "--weighting") == "factored" == RunConfig().weighting
    assert cli_default("benchmark grid", "--weighting") == "factored" == MethodConfig().weighting
    assert cli_default("benchmark protocol", "--weighting") == "factored"
