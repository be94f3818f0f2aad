"""The user docs: the README's Python snippet runs, every command is documented, links resolve,
and user docs describe the software as it is (no project history)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from gwnmo_meta.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
USER_DOCS = [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
ALL_DOCS = [*USER_DOCS, ROOT / "CHANGELOG.md"]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_is_a_short_front_door_with_one_short_python_snippet():
    text = README.read_text()
    assert len(text.splitlines()) <= 170
    (snippet,) = _python_blocks(text)
    assert len(snippet.splitlines()) <= 12


def test_readme_python_snippet_runs_and_meta_trains_m():
    (snippet,) = _python_blocks(README.read_text())
    check = (
        "\nassert all(p.grad is not None and p.grad.abs().sum() > 0 for p in M.parameters())"
        "\nprint('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", snippet + check], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("ok")


def test_every_command_has_its_usage_in_the_cli_reference():
    cli_md = (ROOT / "docs" / "CLI.md").read_text()
    commands = typer.main.get_command(app).commands
    assert commands
    for name, command in commands.items():
        assert f"## {name}\n" in cli_md, name
        for sub in getattr(command, "commands", {None: None}):  # a group: each of its commands
            usage = " ".join(filter(None, (name, sub)))
            if name != "version":
                assert re.search(rf"^    gwnmo-meta {usage}\b", cli_md, flags=re.M), usage


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)}


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(doc):
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        assert resolved.exists(), f"{doc.name}: {target}"
        if anchor:
            assert anchor in _anchors(resolved), f"{doc.name}: {target}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_hold_no_project_history(doc):
    text = doc.read_text()
    for pattern in (r"\bissue \d", r"\bVMs?\b", r"before this change", r"\bthis session\b"):
        assert not re.search(pattern, text, flags=re.I), f"{doc.name}: {pattern}"
