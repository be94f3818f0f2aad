"""Configs are declared once: a RunConfig field reaches the methods with no second declaration, and
the CLI builds its configs from their fields, with the configs' defaults."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from enum import Enum
from types import NoneType, SimpleNamespace

import pytest
import typer.main
from typer.testing import CliRunner

from gwnmo_meta.cli import benchmark, evaluate, meta_train, splits, train
from gwnmo_meta.cli.app import app
from gwnmo_meta.config import RunConfig
from gwnmo_meta.registry import METHODS
from gwnmo_meta.training.classic import ClassicConfig
from gwnmo_meta.training.methods import MethodConfig
from gwnmo_meta.training.run_data import method_config

FUNCTIONS = {
    "meta-train": meta_train.meta_train,
    "evaluate": evaluate.evaluate,
    "splits": splits.splits,
    "train": train.train,
    "benchmark grid": benchmark.grid,
    "benchmark protocol": benchmark.protocol,
}
# options named like a config field whose default means something else on purpose
NOT_THE_FIELD = {
    "evaluate": {"dataset", "ways", "shots", "query", "inner_steps"}  # None: as trained
    | {"seed"}  # the meta-test task stream's seed (the run's is --run-seed)
    | {"method"},  # None: score a checkpoint
    "train": {"schedule"},  # None: ClassicConfig's, and only for a learned optimizer
    "benchmark grid": {"shots", "meta_steps"},  # comma list; None: the suite's
    "benchmark protocol": {"shots", "meta_steps", "inner_steps", "val_tasks"},
}


def test_method_config_declares_no_field_of_its_own():
    run = [(f.name, f.type, f.default) for f in dataclasses.fields(RunConfig)]
    assert [(f.name, f.type, f.default) for f in dataclasses.fields(MethodConfig)] == run


def test_every_run_setting_reaches_the_method():
    cfg = RunConfig(method="hg", schedule="unrolled", inner_lr=0.5, hg_beta=0.2, logreg_l2=0.3)
    cfg = cfg.replace(inner_steps=2, learn_init=False, seed=7, inner_batch=5, shots=2)
    mcfg = method_config(cfg)
    assert isinstance(mcfg, MethodConfig)
    assert dataclasses.asdict(mcfg) == cfg.to_dict()
    assert (mcfg.lr, mcfg.info.name) == (0.5, "hg")
    assert method_config(RunConfig(method="adam")).lr == METHODS["adam"].inner_lr.value  # unset α


def _options(command: str) -> dict[str, typing.Any]:
    """The click options of ``gwnmo-meta COMMAND``, by parameter name."""
    cmd = typer.main.get_command(app)
    for name in command.split():
        cmd = cmd.commands[name]
    return {p.name: p for p in cmd.params if p.param_type_name == "option"}


def _kind(command: str, name: str) -> type:
    """The value type of option ``name`` (``Optional`` and ``Annotated`` removed)."""
    hints = typing.get_type_hints(inspect.unwrap(FUNCTIONS[command]), include_extras=True)
    kinds = [t for t in typing.get_args(typing.get_args(hints[name])[0]) if t is not NoneType]
    return kinds[0] if kinds else typing.get_args(hints[name])[0]


def _config_for(command: str) -> type:
    return ClassicConfig if command == "train" else RunConfig


@pytest.mark.parametrize("command", FUNCTIONS)
def test_option_defaults_are_the_config_defaults(command):
    """An option named like a config field defaults to that field's declared default."""
    fields = {f.name: f.default for f in dataclasses.fields(_config_for(command))}
    checked = 0
    for name, option in _options(command).items():
        if name in fields and name not in NOT_THE_FIELD.get(command, set()):
            assert option.default == fields[name], (command, name)
            checked += 1
    assert checked >= 10
    if command == "evaluate":
        assert _options(command)["run_seed"].default == fields["seed"]


@pytest.mark.parametrize("command", FUNCTIONS)
def test_option_defaults_read_the_config_defaults_instead_of_restating_them(command):
    """``ways: Ways = RUN.ways``, not ``= 5``: each default is declared once, in RunConfig.

    (``train``'s are ClassicConfig's, restated once in ``cli/train.py``'s ``CLASSIC`` because that
    module imports torch, which ``--help`` does not wait for; the test above holds them equal.)
    """
    fn = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(FUNCTIONS[command])))).body[0]
    args = fn.args.args[-len(fn.args.defaults) :]
    fields = {f.name for f in dataclasses.fields(_config_for(command))}
    fields -= NOT_THE_FIELD.get(command, set())
    source = "CLASSIC" if command == "train" else "RUN"
    restated = {
        a.arg: ast.unparse(d)
        for a, d in zip(args, fn.args.defaults, strict=True)
        if a.arg in fields and ast.unparse(d) != f"{source}.{a.arg}"
    }
    assert restated == {}


def _other_value(kind: type, default: typing.Any, name: str) -> typing.Any:
    """A valid value for the option that is not its default (config-side representation)."""
    if isinstance(kind, type) and issubclass(kind, Enum):
        return next(c.value for c in kind if c.value != default)
    if kind is bool:
        return not default
    if kind is int:
        return 3 if default is None else default + 1
    if kind is float:
        return 0.5 if default is None else default / 2
    if name == "device":
        return "cpu"
    return "0-4"  # class lists and paths: a string


def _arguments(command: str, names: typing.Iterable[str]) -> tuple[list[str], dict]:
    """Command-line flags setting each option in ``names`` away from its default, and the
    config values they should give."""
    options, args, expected = _options(command), [], {}
    for name in names:
        option = options[name]
        value = _other_value(_kind(command, name), option.default, name)
        if isinstance(value, bool):
            args.append(option.opts[0] if value else option.secondary_opts[0])
        else:
            args += [option.opts[0], str(value)]
        expected[name] = value
    return args, expected


def _exposed(command: str) -> list[str]:
    fields = {f.name for f in dataclasses.fields(_config_for(command))}
    skip = NOT_THE_FIELD.get(command, set())
    return [n for n in _options(command) if n in fields and n not in skip]


def test_meta_train_builds_its_run_config_from_every_option(monkeypatch, tmp_path):
    from gwnmo_meta.training import trainer

    seen = {}

    def fake(cfg, out, **kwargs):
        seen["cfg"] = cfg
        return SimpleNamespace(interrupted=False, steps_done=0, best_val_accuracy=None)

    monkeypatch.setattr(trainer, "meta_train", fake)
    names = _exposed("meta-train")
    args, expected = _arguments("meta-train", names)
    res = CliRunner().invoke(app, ["meta-train", *args, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert {n: getattr(seen["cfg"], n) for n in names} == expected
    # every field is a meta-train flag but evaluate --method's and the layout version
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert fields - set(names) == {"hg_beta", "logreg_l2", "schema"}


def test_evaluate_method_builds_its_run_config_from_every_option(monkeypatch):
    from gwnmo_meta.evaluation import evaluate as evaluation

    seen = {}

    def fake(cfg, **kwargs):
        seen["cfg"] = cfg
        return dict(dataset="d", test_dataset=None, ways=5, shots=1, method="m", text="t")

    monkeypatch.setattr(evaluation, "evaluate_method", fake)
    names = [*_exposed("evaluate"), "ways", "shots", "query", "inner_steps", "dataset", "method"]
    args, expected = _arguments("evaluate", names)
    args += ["--run-seed", "7", "--seed", "99"]
    res = CliRunner().invoke(app, ["evaluate", *args])
    assert res.exit_code == 0, res.output
    assert {n: getattr(seen["cfg"], n) for n in names} == expected
    assert (seen["cfg"].seed, seen["cfg"].learn_init) == (7, False)  # the run's seed, fixed init


def test_train_builds_its_classic_config_from_every_option(monkeypatch, tmp_path):
    from gwnmo_meta.training import classic

    seen = {}
    monkeypatch.setattr(classic, "train_classic", lambda cfg, out, **kw: seen.update(cfg=cfg) or [])
    names = [n for n in _exposed("train") if n != "weighting_from"]
    args, expected = _arguments("train", names)
    args += ["--schedule", "alg2", "--weighting-from", "m.pt", "--out", str(tmp_path)]
    res = CliRunner().invoke(app, ["train", *args])
    assert res.exit_code == 0, res.output
    assert {n: getattr(seen["cfg"], n) for n in names} == expected
    assert (seen["cfg"].schedule, seen["cfg"].weighting_from) == ("alg2", "m.pt")
    assert {f.name for f in dataclasses.fields(ClassicConfig)} <= set(_options("train"))


@pytest.mark.parametrize("command", ["benchmark grid", "benchmark protocol"])
def test_benchmark_builds_the_cells_run_config_from_its_options(monkeypatch, command):
    from gwnmo_meta.suites import grid, protocol

    class Built(Exception):
        pass

    def fake(*args, base, **kwargs):
        raise Built(base)

    monkeypatch.setattr(grid, "build_suite", fake)
    monkeypatch.setattr(protocol, "build_protocol", fake)
    base_names = benchmark.GRID_BASE if command == "benchmark grid" else benchmark.PROTOCOL_BASE
    names = [n for n in base_names if n not in NOT_THE_FIELD[command]]
    args, expected = _arguments(command, names)
    res = CliRunner().invoke(app, [*command.split(), *args])
    assert isinstance(res.exception, Built), res.output
    (base,) = res.exception.args
    assert {n: getattr(base, n) for n in names} == expected
    assert set(base_names) <= set(_exposed(command)) | NOT_THE_FIELD[command]
    if command == "benchmark protocol":  # the suite's own defaults, unless given
        assert (base.meta_steps, base.val_every, base.val_tasks) == (100, 50, 100)
