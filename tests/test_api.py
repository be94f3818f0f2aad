"""The Python API and packaging: lazy exports, one version, declared dependencies, paths, devices."""

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import gwnmo_meta
from gwnmo_meta.device import resolve_device
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.io import paths

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light_and_exports_resolve_lazily():
    code = (
        "import sys, gwnmo_meta\n"
        "print(sorted(m for m in ('torch', 'learn2learn', 'higher') if m in sys.modules))\n"
        "from gwnmo_meta import GWNMO, DifferentiableGWNMO, gwnmo_direction, RunConfig, "
        "meta_train, evaluate_checkpoint, prepare_fewshot, CoordinateWeighting, ThesisMLPWeighting, "
        "gwnmo_step\n"
        "print('learn2learn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "False"]


def test_all_lists_exactly_the_lazy_names_and_each_resolves():
    assert set(gwnmo_meta.__all__) == {"__version__", *gwnmo_meta._LAZY}
    for name in gwnmo_meta.__all__:
        assert getattr(gwnmo_meta, name) is not None, name
    with pytest.raises(AttributeError):
        gwnmo_meta.no_such_name  # noqa: B018


def test_version_is_single_sourced():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "gwnmo_meta.__version__"
    assert importlib.metadata.version("gwnmo-meta") == gwnmo_meta.__version__
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def _imported_top_level_modules() -> set[str]:
    names = set()
    for folder in ("gwnmo_meta", "cli", "tasks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    # _typeshed: the standard library's stubs, imported under TYPE_CHECKING only
    return names - set(sys.stdlib_module_names) - {"gwnmo_meta", "__future__", "_typeshed"}


def test_every_imported_third_party_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        d.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for d in project["dependencies"]
    }
    dists = importlib.metadata.packages_distributions()
    for module in _imported_top_level_modules():
        assert {d.lower() for d in dists.get(module, [module])} & declared, module


def test_cache_and_data_folders_respect_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("GWNMO_CACHE", raising=False)
    monkeypatch.delenv("GWNMO_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "gwnmo-meta"
    from gwnmo_meta.tasks.data import resolve_data_root

    assert resolve_data_root() == tmp_path / "xdg" / "gwnmo-meta" / "data"
    monkeypatch.setenv("GWNMO_CACHE", str(tmp_path / "mine"))
    assert paths.cache_dir() == tmp_path / "mine" and paths.cache_dir("x") == Path("x")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_root() == Path.home() / ".cache" / "gwnmo-meta" / "data"


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'cuda0'"):
        resolve_device("cuda0")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match=f"--device {name} was requested but no CUDA"):
                resolve_device(name)
    else:
        n = torch.cuda.device_count()
        assert resolve_device(f"cuda:{n - 1}") == torch.device(f"cuda:{n - 1}")
        with pytest.raises(ConfigError, match=f"has {n} CUDA device"):
            resolve_device(f"cuda:{n}")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(ConfigError, match="no usable MPS"):
            resolve_device("mps")
