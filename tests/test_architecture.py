"""The package's shape, enforced: which stage may import which, no torch in story/, small modules.

docs/architecture.md explains the rules; this test is what keeps them true. Imports inside functions
count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "storyboard"

# Package (or module) -> prefixes it must never import. Libraries (models, prompt) stay below every
# stage; render never reaches up to story loading, the application or the CLI; stages never import
# the application layer that drives them.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "storyboard.story": ("storyboard.render", "storyboard.app", "storyboard.cli", "storyboard.commands",
                         "storyboard.check", "storyboard.models", "torch", "diffusers", "transformers"),
    "storyboard.render": ("storyboard.story", "storyboard.app", "storyboard.cli", "storyboard.commands",
                          "storyboard.layout", "storyboard.check"),
    "storyboard.layout": ("storyboard.render", "storyboard.app", "storyboard.cli", "storyboard.commands",
                          "storyboard.check", "torch"),
    "storyboard.check": ("storyboard.render", "storyboard.story", "storyboard.app", "storyboard.cli",
                         "storyboard.commands"),
    "storyboard.models": ("storyboard.story", "storyboard.render", "storyboard.app", "storyboard.cli",
                          "storyboard.layout", "storyboard.check"),
    "storyboard.prompt": ("storyboard.story", "storyboard.render", "storyboard.app", "storyboard.cli",
                          "storyboard.layout", "storyboard.check", "storyboard.models.load"),
    "storyboard.jobs": ("storyboard.render", "storyboard.app", "storyboard.cli", "storyboard.story.load",
                        "storyboard.story.plan", "torch"),
    "storyboard.app": ("storyboard.cli", "storyboard.commands", "storyboard.review"),
    "storyboard.review": ("storyboard.cli", "storyboard.commands"),
    # Ray rendering is a Renderer the app layer chooses: it never reaches back up into the app, the
    # shells or the story (jobs arrive as PanelJobs; PNG encoding is handed in by the app).
    "storyboard.distributed": ("storyboard.app", "storyboard.cli", "storyboard.commands", "storyboard.story",
                               "storyboard.layout", "storyboard.check"),
}  # fmt: skip

# No stage or library reaches up to the shells.
for _owner in ("storyboard.story", "storyboard.render", "storyboard.layout", "storyboard.check",
               "storyboard.models", "storyboard.prompt", "storyboard.jobs", "storyboard.distributed"):
    FORBIDDEN[_owner] = (*FORBIDDEN[_owner], "storyboard.review")  # fmt: skip

MAX_LINES = 400


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, absolute, relative imports resolved, function bodies included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _owner(mod: str) -> str | None:
    for prefix in sorted(FORBIDDEN, key=len, reverse=True):
        if mod == prefix or mod.startswith(prefix + "."):
            return prefix
    return None


def _hits(mod: str, banned: tuple[str, ...]) -> list[str]:
    return [b for b in banned if mod == b or mod.startswith(b + ".")]


def test_imports_point_down_the_pipeline() -> None:
    problems = []
    for path in sources():
        owner = _owner(module_name(path))
        if owner is None:
            continue
        for mod in sorted(imports_of(path)):
            for banned in _hits(mod, FORBIDDEN[owner]):
                where = path.relative_to(PKG.parent)
                problems.append(f"{where} imports {mod} ({owner} must not use {banned})")
    assert not problems, "\n".join(problems)


def test_the_rule_checker_sees_a_violation(tmp_path: Path) -> None:
    # The checker itself must be able to fail: a lazy, relative import of the app from render.
    bad = PKG / "render" / "_probe_for_test.py"
    bad.write_text("def f():\n    from ..app import build\n    return build\n")
    try:
        assert "storyboard.app.build" in imports_of(bad)
        with pytest.raises(AssertionError, match="storyboard.app"):
            test_imports_point_down_the_pipeline()
    finally:
        bad.unlink()


def test_modules_stay_small() -> None:
    big = {
        str(p.relative_to(PKG.parent)): n
        for p in sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_story_stage_loads_without_torch() -> None:
    # Planning a story (what `validate` and `prompts` need) must not pay for torch's import.
    code = (
        "import sys\n"
        "import storyboard.story.load, storyboard.story.plan, storyboard.jobs, storyboard.prompt\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
