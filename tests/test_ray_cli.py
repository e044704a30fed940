"""`storyboard build --ray` and `render --candidates --ray` as a user runs them: the command starts its
own local Ray instance (no address given) and stops it, and the comic's bytes equal a local build's.

Draft panels keep this fast; tests/test_ray_build.py renders the tiny model on actors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
STORY = ROOT / "stories" / "demo.yaml"


def storyboard(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DISABLE_IMPORT_WARNING": "1", "STORYBOARD_QUIET": "1"}
    code = "import sys; from storyboard.cli import main; sys.argv[0] = 'storyboard'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (p.parent.name in ("panels", "pages", "gate") or p.suffix in (".pdf", ".cbz"))
    }


def test_build_and_candidates_with_ray_on_the_command_line(tmp_path: Path) -> None:
    local = storyboard("build", str(STORY), "--draft", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    # `--ray` alone, before the story argument: a local Ray instance, started and stopped by the command.
    run = storyboard("build", "--ray", str(STORY), "--draft", "--out", str(tmp_path / "ray"))
    assert run.returncode == 0, run.stderr
    assert "rendered 7 panel(s), reused 0 (draft)" in run.stdout
    assert "ray: 7 panel(s) on 2 actor(s)" in run.stderr  # throughput at the end, per actor below it
    assert len([line for line in run.stderr.splitlines() if "panels/min" in line or "idle" in line]) == 2
    a, b = files(tmp_path / "local" / "demo" / "draft"), files(tmp_path / "ray" / "demo" / "draft")
    assert "the-garden-concert.pdf" in a and len(a) > 9 and a == b

    cands = storyboard(
        "render",
        str(STORY),
        "-p",
        "gate",
        "--candidates",
        "3",
        "--draft",
        "--ray",
        "--out",
        str(tmp_path / "ray"),
    )
    assert cands.returncode == 0, cands.stderr
    sheet = tmp_path / "ray" / "demo" / "draft" / "candidates" / "gate"  # drafts keep their own store
    seeds = sorted(sheet.glob("seed-*.png"))
    assert len(seeds) == 3 and (sheet / "sheet.png").is_file()
    # The panel's own seed was in the store already: two candidates went to the actors.
    assert "ray: 2 panel(s)" in cands.stderr
