"""The protocol suite: grids bracket the optimum, equal budgets, seeds, paired tables, resume."""

import json

import pytest

from gwnmo_meta.config import RunConfig
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.suites.protocol import (
    Source,
    Variant,
    build_protocol,
    ladder_index,
    ladder_value,
    parse_variants,
    run_protocol,
    tune,
)
from tests.helpers import tiny_base


def test_ladder_is_half_decades_and_round_trips():
    assert [ladder_value(k) for k in range(-3, 4)] == [0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
    for k in range(-12, 6):
        assert ladder_index(ladder_value(k)) == k


def _peaked(best_lr):
    calls = []

    def score(hp):
        calls.append(dict(hp))
        lr = dict(hp)["inner_lr"]
        return 1.0 - abs(ladder_index(lr) - ladder_index(best_lr)) / 10

    return score, calls


@pytest.mark.parametrize("best, extra", [(3.0, 0), (30.0, 2), (0.1, 3), (1000.0, 3)])
def test_tune_extends_the_grid_until_the_optimum_is_bracketed(best, extra):
    score, calls = _peaked(best)
    t = tune([("inner_lr", 3.0)], score)
    assert len(calls) == 3 + extra  # 1, 3, 10 first, then one rung at a time
    assert [c["inner_lr"] for c in calls[:3]] == [1.0, 3.0, 10.0]
    if best != 1000.0:  # the rung past the best was tried: bracketed
        assert dict(t.hparams)["inner_lr"] == best and t.at_edge == []
    else:  # capped at MAX_EXTENSIONS: reported as still at the edge
        assert dict(t.hparams)["inner_lr"] == 300.0 and t.at_edge == ["inner_lr"]


def test_tune_is_coordinatewise_and_never_selects_a_diverged_cell():
    def score(hp):
        hp = dict(hp)
        if hp["inner_lr"] >= 10:
            return None  # diverged
        return (
            0.5 + 0.01 * ladder_index(hp["inner_lr"]) - 0.001 * abs(ladder_index(hp["hg_beta"]) + 8)
        )

    t = tune([("inner_lr", 3.0), ("hg_beta", 1e-3)], score)
    assert dict(t.hparams) == {"inner_lr": 3.0, "hg_beta": 1e-4}
    assert all(tr["hparams"]["hg_beta"] == 1e-3 for tr in t.tried[:3])  # α first, β at default
    assert all(tr["hparams"]["inner_lr"] == 3.0 for tr in t.tried[3:])  # then β at the chosen α


def test_variants_are_pluggable_and_validated():
    rows = parse_variants("gwnmo lr=gwnmo:schedule=alg1,inner_lr=0.3,first_order=true;x=sgd")
    assert rows[0] == Variant(
        "gwnmo lr", "gwnmo", (("schedule", "alg1"), ("inner_lr", 0.3), ("first_order", True))
    )
    assert rows[1] == Variant("x", "sgd")
    (typed,) = parse_variants("j=gwnmo:judge_queries=2,inner_batch=5,head_hidden=none")
    assert typed.overrides == (("judge_queries", 2), ("inner_batch", 5), ("head_hidden", None))
    assert all(type(v) is type(w) for (_, v), w in zip(typed.overrides, (2, 5, None), strict=True))
    for bad in ["nomethod", "a=bogus", "a=sgd:nofield=1", "a=sgd:inner_steps=abc", "a=sgd:seed=1"]:
        with pytest.raises(ConfigError):
            parse_variants(bad)
    suite = build_protocol(extra_variants=rows, methods=("gwnmo", "maml", "prototype"))
    names = [v.name for v in suite.variants]
    assert names[-2:] == ["gwnmo lr", "x"] and "maml" in names
    maml = next(v for v in suite.variants if v.name == "maml")
    assert maml.regimes(["learned", "fixed"]) == ["learned"]
    proto = next(v for v in suite.variants if v.name == "prototype")
    assert proto.regimes(["learned", "fixed"]) == ["any"]
    with pytest.raises(ConfigError, match="unique"):
        build_protocol(extra_variants=[Variant("maml", "maml")])
    assert Source.parse("mixed:cifar10") == Source("mixed", "cifar10")
    from gwnmo_meta.suites.protocol import Cell

    fixed = Cell(Source("mnist"), 1, rows[1], "fixed", (("inner_lr", 1.0),), 2)
    cfg = fixed.config(suite.base)
    assert (cfg.seed, cfg.data_seed, cfg.learn_init, cfg.inner_lr) == (2, 0, False, 1.0)
    assert not fixed.meta_trained  # SGD fine-tuning from a fixed init learns nothing
    (lslr,) = parse_variants("s=sgd:learn_lr=tensor,schedule=alg2")
    assert Cell(Source("mnist"), 1, lslr, "fixed", (), 0).meta_trained  # it learns step sizes
    with pytest.raises(ConfigError):
        Source.parse("mixed:")


def test_default_protocol_covers_the_issue_table():
    from gwnmo_meta.registry import SCHEDULES

    suite = build_protocol()
    assert [s.key for s in suite.sources] == [
        "mixed",
        "mixed-to-mnist",
        "mixed-to-fmnist",
        "mixed-to-cifar10",
    ]
    assert (
        suite.shots == [1, 5] and suite.regimes == ["learned", "fixed"] and suite.seeds == [0, 1, 2]
    )
    names = {v.name for v in suite.variants}
    assert {f"gwnmo {s}" for s in SCHEDULES} <= names
    assert {"maml", "meta-sgd", "hg", "sgd", "adam", "prototype", "logreg"} <= names


def test_protocol_suite_runs_pairs_rows_on_identical_tasks_and_resumes(
    tiny_data_root, tmp_path, monkeypatch
):
    base = tiny_base(tiny_data_root, inner_steps=2, meta_steps=1, val_every=1, val_tasks=4)
    suite = build_protocol(
        base=base,
        sources=["mnist"],
        shots=[1],
        methods=("gwnmo", "maml", "sgd", "prototype"),
        schedules=("alg2",),
        seeds=[0, 1],
        test_tasks=6,
    )
    results, paths = run_protocol(suite, tmp_path, progress=False)
    (g,) = results["groups"]
    rows = {r["row"]: r for r in g["rows"]}
    assert set(rows) == {
        "gwnmo alg2 [learned]",
        "gwnmo alg2 [fixed]",
        "maml [learned]",
        "sgd [learned]",
        "sgd [fixed]",
        "prototype",
    }
    for r in rows.values():
        assert r["tasks"] == 12  # 6 tasks × 2 seeds, pooled
        assert set(r["seed_accuracy"]) == {0, 1}
        assert len(r["grid"]) == (0 if r["row"] == "prototype" else 3)  # ties: no extension
    assert len(rows["gwnmo alg2 [learned]"]["step_accuracy"]) == 3
    assert (
        rows["sgd [fixed]"]["vs_sgd"]["mean"] == 0.0 == rows["sgd [fixed]"]["vs_sgd"]["seed_ci95"]
    )
    assert "vs_maml" in rows["prototype"]
    assert len(g["pairs"]) == 6 * 5 // 2
    # every row of a seed was scored on the very same meta-test tasks
    digests = {}
    for cell in (tmp_path / "cells").glob("*/test.json"):
        rec = json.loads(cell.read_text())
        seed = rec["cell"].rsplit("-s", 1)[1]
        digests.setdefault(seed, set()).add(rec["eval"]["tasks_digest"])
    assert {k: len(v) for k, v in digests.items()} == {"0": 1, "1": 1}
    assert results["budget"]["meta_trained_cells"] > 0
    cpu = [
        json.loads(v.read_text())["cpu_seconds"] for v in (tmp_path / "cells").glob("*/val.json")
    ]
    assert all(c > 0 for c in cpu) and results["budget"]["meta_val_cpu_seconds"] > 0
    assert {p.name for p in paths} == {"results.json", "results.md", "steps.png"}
    md = (tmp_path / "results.md").read_text()
    assert "Δ vs SGD fine-tuning" in md and "Budget:" in md

    def must_not_run(*a, **k):
        raise AssertionError("a finished cell was re-run")

    monkeypatch.setattr("gwnmo_meta.training.trainer.meta_train", must_not_run)
    monkeypatch.setattr("gwnmo_meta.evaluation.evaluate.evaluate_method", must_not_run)
    monkeypatch.setattr("gwnmo_meta.evaluation.evaluate.evaluate_checkpoint", must_not_run)
    # a suite written before a setting existed resumes when that setting is at its default
    settings = json.loads((tmp_path / "suite.json").read_text())
    assert settings.pop("adapt") == "head"
    (tmp_path / "suite.json").write_text(json.dumps(settings))
    again, _ = run_protocol(suite, tmp_path, progress=False)
    assert again["groups"] == results["groups"]
    other = build_protocol(base=RunConfig(**{**base.to_dict(), "meta_steps": 2}), sources=["mnist"])
    with pytest.raises(ConfigError, match="other settings"):
        run_protocol(other, tmp_path, progress=False)


def test_seed_level_difference_uses_per_seed_means():
    from gwnmo_meta.suites.protocol_report import paired_difference as _diff

    d = _diff([1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], n_seeds=2)
    assert d["mean"] == pytest.approx(0.5)
    # per-seed differences [1, 0]: sd 0.7071, t_{0.975,1} = 12.7062
    assert d["seed_ci95"] == pytest.approx(12.7062047 * (0.5**0.5) / (2**0.5), rel=1e-6)
    assert not d["seed_significant"]
    assert "seed_ci95" not in _diff([1.0, 0.0], [0.0, 0.0], n_seeds=1)
