"""Helpers for tests that edit a copy of the demo story."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_demo(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "stories", tmp_path / "stories")
    shutil.copytree(ROOT / "characters", tmp_path / "characters")
    return tmp_path / "stories" / "demo.yaml"


def changed_lines(a: str, b: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]

