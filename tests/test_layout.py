"""The package stays readable: small modules and short functions, the CLI included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    """Every module of gwnmo_meta/, cli/ and tasks/ (not the cli/ and tasks/ links a development
    checkout may hold inside gwnmo_meta/)."""
    skip = (ROOT / "gwnmo_meta" / "cli", ROOT / "gwnmo_meta" / "tasks")
    found = []
    for top in (ROOT / "gwnmo_meta", ROOT / "cli", ROOT / "tasks"):
        for path in sorted(top.rglob("*.py")):
            if not any(path.is_relative_to(s) for s in skip):
                found.append(path)
    return found


def long_parts(path: Path, root: Path = ROOT) -> list[str]:
    """The module, if over ``MAX_MODULE_LINES``, and every function over ``MAX_FUNCTION_LINES``
    (from its ``def`` to its last line)."""
    text = path.read_text(encoding="utf-8")
    name, found = path.relative_to(root), []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {n} lines")
    return found


def test_no_module_over_600_lines_and_no_function_over_80():
    modules = _modules()
    assert len(modules) > 30 and any(p.parent == ROOT / "cli" for p in modules)
    assert [part for path in modules for part in long_parts(path)] == []


def test_the_check_finds_a_long_module_and_a_long_function(tmp_path):
    path = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path.write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert long_parts(path, tmp_path) == [f"m.py:1 long: {MAX_FUNCTION_LINES + 1} lines"]
    path.write_text("".join(f"y{i} = {i}\n" for i in range(MAX_MODULE_LINES + 1)))
    assert long_parts(path, tmp_path) == [f"m.py: {MAX_MODULE_LINES + 1} lines"]
    path.write_text("".join(f"y{i} = {i}\n" for i in range(MAX_MODULE_LINES)))
    assert long_parts(path, tmp_path) == []


def test_what_moved_out_of_a_module_is_still_importable_from_it():
    """protocol.py, classic.py and trainer.py re-export the names of the modules split off them."""
    from gwnmo_meta.suites import cells, protocol, protocol_runner, tuning
    from gwnmo_meta.training import classic, classic_learners, run_folder, trainer

    for module in (protocol, classic, trainer):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
    assert (protocol.Cell, protocol.tune, protocol.CellRunner) == (
        cells.Cell,
        tuning.tune,
        protocol_runner.CellRunner,
    )
    assert classic.OnlineGWNMO is classic_learners.OnlineGWNMO
    assert trainer.check_writable is run_folder.check_writable
