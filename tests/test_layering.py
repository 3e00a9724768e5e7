"""harness/'s folders are the pipeline's stages, and data flows one way: a module
imports from its own stage or an earlier one, never a later one."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.core import repo

PACKAGE = repo.ROOT / "harness"
# the stages in pipeline order; cli.py and __main__.py sit on top of them all
STAGES = ("core", "inputs", "build", "boot", "traces", "judge", "outputs", "runs", "lab")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, stage) of every harness.<stage> import in path."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods = [node.module]
            if node.module == "harness":
                mods = [f"harness.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        for m in mods:
            parts = m.split(".")
            if parts[0] == "harness" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
    return out


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) == 1:  # cli.py, __main__.py, __init__.py: the top
            continue
        stage = rel.parts[0]
        for line, imported in _imports(path):
            if imported not in STAGES:
                bad.append(f"harness/{rel}:{line}: imports harness.{imported}, not a stage")
            elif STAGES.index(imported) > STAGES.index(stage):
                bad.append(f"harness/{rel}:{line}: {stage} imports the later stage {imported}")
    return bad


def test_every_folder_of_harness_is_a_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - {"outputs"} <= set(STAGES)
    assert set(STAGES) <= folders
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "cli.py"}


def test_no_stage_imports_a_later_one():
    assert violations() == []


def test_the_check_sees_a_backward_import(tmp_path, monkeypatch):
    fake = tmp_path / "harness"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("from harness.judge import model\n")
    (fake / "core" / "worse.py").write_text("from harness import lab\nimport harness.misc\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert violations() == [
        "harness/core/bad.py:1: core imports the later stage judge",
        "harness/core/worse.py:1: core imports the later stage lab",
        "harness/core/worse.py:2: imports harness.misc, not a stage",
    ]


def test_the_readme_layout_table_names_every_stage():
    readme = (repo.ROOT / "README.md").read_text()
    for stage in STAGES:
        assert f"`harness/{stage}/`" in readme, stage


def test_pyproject_lists_every_package():
    import tomllib

    listed = tomllib.loads((repo.ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(repo.ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(listed["packages"]) == found
