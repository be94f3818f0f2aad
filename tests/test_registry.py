"""The registry of choices: the single source of the CLI's choices, the suites and validation."""

import subprocess
import sys

import pytest

from gwnmo_meta import registry
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.registry import METHODS, MethodInfo


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_registry_and_cli_help_import_neither_torch_nor_learn2learn():
    out = _run(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gwnmo_meta.cli.app import app\n"
        "assert CliRunner().invoke(app, ['meta-train', '--help']).exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'learn2learn', 'higher') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_cli_choices_are_the_registry():
    from gwnmo_meta.cli import options

    assert [c.value for c in options.Method] == list(METHODS)
    assert [c.value for c in options.Dataset] == list(registry.DATASETS)
    assert [c.value for c in options.Schedule] == list(registry.SCHEDULES)
    assert [c.value for c in options.Weighting] == list(registry.WEIGHTINGS)
    assert [c.value for c in options.Backbone] == list(registry.BACKBONES)
    assert [c.value for c in options.ClassicOptimizer] == [m for m in METHODS if METHODS[m].classic]


def test_check_names_the_choices_and_the_flag():
    assert METHODS.check("maml").engine == "learn2learn"
    with pytest.raises(
        ConfigError, match=r"unknown method 'reptile' in --methods; choose one of gwnmo,"
    ):
        METHODS.check("reptile", "--methods")
    with pytest.raises(ValueError, match="already registered"):
        METHODS.register(MethodInfo("gwnmo"))
    assert registry.check_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        registry.check_device("gpu")


def test_every_implementation_is_a_class_built_by_direct_reference():
    pytest.importorskip("learn2learn")
    for name, info in METHODS.items():
        assert callable(info.impl) and isinstance(info.implementation(), type), name
    assert METHODS["sgd"].implementation() is __import__("torch").optim.SGD
    with pytest.raises(ValueError, match="no implementation"):
        MethodInfo("bare").implementation()


def test_every_method_carries_its_step_sizes():
    """Step sizes and grids live in the registry entry; the old tables are views of it."""
    from gwnmo_meta import defaults
    from gwnmo_meta.suites import grid as benchmark

    for name, info in METHODS.items():
        has_inner_loop = info.engine != "reference"
        assert (info.inner_lr is not None) == has_inner_loop, name
        assert bool(info.lr_grid) == has_inner_loop, name
        if has_inner_loop:
            assert info.inner_lr.value in info.lr_grid, name  # the default is a grid point
            assert info.inner_lr.source, name
        assert (info.classic_lr is not None) == info.classic, name
    assert (
        set(defaults.INNER_LR)
        == set(benchmark.LR_GRIDS)
        == set(METHODS.names(lambda m: m.engine != "reference"))
    )
    assert set(defaults.CLASSIC_LR) == set(METHODS.names(lambda m: m.classic))


def test_suites_derive_from_the_registry():
    from gwnmo_meta.suites.grid import build_suite

    for name in ("quick", "main", "transfer"):
        suite = build_suite(name)
        assert suite.extra["methods"] == [m for m, i in METHODS.items() if name in i.suites]
        assert suite.extra["schedules"] == [
            s for s, i in registry.SCHEDULES.items() if name in i.suites
        ]


def test_a_new_method_is_one_registration():
    """Registering RMSprop makes it a CLI choice, a valid config and a working method."""
    out = _run(
        "from gwnmo_meta.registry import METHODS, MethodInfo\n"
        "def rmsprop():\n"
        "    import torch\n"
        "    return torch.optim.RMSprop\n"
        "METHODS.register(MethodInfo('rmsprop', 'RMSprop via higher', impl=rmsprop, classic=True))\n"
        "from typer.testing import CliRunner\n"
        "from gwnmo_meta.cli.app import app\n"
        "r = CliRunner(env={'COLUMNS': '200'}).invoke(app, ['meta-train', '--help'])\n"
        "print('rmsprop' in r.output)\n"
        "r = CliRunner(env={'COLUMNS': '200'}).invoke(app, ['train', '--help'])\n"
        "print('rmsprop' in r.output)\n"
        "import torch\n"
        "from gwnmo_meta.training.methods import MethodConfig, build_method\n"
        "from gwnmo_meta.tasks.episodes import Episode\n"
        "m = build_method(MethodConfig(method='rmsprop', inner_lr=0.01, inner_steps=2), 8, 3)\n"
        "g = torch.Generator().manual_seed(0)\n"
        "ep = Episode(torch.randn(3, 8, generator=g), torch.arange(3),"
        " torch.randn(6, 8, generator=g), torch.arange(3).repeat(2))\n"
        "loss, outs = m.episodes([ep, ep], train=True)\n"
        "loss.backward()\n"
        "print(type(m.inner_opt).__name__, len(outs), outs[0].inner_losses[0] > 0)\n"
    )
    assert out.split() == ["True", "True", "RMSprop", "2", "True"]
