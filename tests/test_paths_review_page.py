"""Issue 22 in a real browser: `storyboard review stories/demo.yaml --draft --no-open` started in a
subprocess with a RELATIVE story path from a copy of the repository. Save writes the story file (a
reload shows the new text, the next save is accepted), Pick writes the seed; the candidate count the
user typed stays in its field, and candidates show in the order they were rendered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyboard.review.server import dom_id
from tests.story_helpers import changed_lines
from tests.test_paths_as_typed import ROOT, copy_repo, seeds_of
from tests.test_review_browser import WAIT_MS, browser, page, wait_done, zone  # noqa: F401 (fixtures)

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - test_review_browser skips the module (or fails in CI) first
    pytest.skip("playwright missing", allow_module_level=True)


def review(cwd: Path, story: str) -> Iterator[str]:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"
    )
    cmd = [sys.executable, "-m", "storyboard", "review", story, "--draft", "--no-open"]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"review page for (\S+): (http://127\.0\.0\.1:\d+/)", line)
        assert found is not None and found.group(1) == story, line
        yield found.group(2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_repo(tmp_path)


def save_scene(page: Page, panel_id: str, text: str) -> None:  # noqa: F811
    form = page.locator(f"#e-{dom_id(panel_id)}")
    form.locator("textarea[name=scene]").fill(text)
    form.get_by_role("button", name="Save").click()
    expect(page.locator(f"#m-{dom_id(panel_id)}")).to_contain_text("Saved to the story file.")


def test_save_and_pick_write_the_story_named_relative(page: Page, project: Path) -> None:  # noqa: F811
    story = project / "stories" / "demo.yaml"
    before = story.read_text()
    for url in review(project, "stories/demo.yaml"):
        page.goto(url)
        save_scene(page, "gate", "first edit")
        assert changed_lines(before, story.read_text()) == [
            "-        scene: (full body:1.2), school gate, morning, cherry blossoms, walking",
            "+        scene: first edit",
        ]
        page.reload()  # the file on disk is what the page shows
        expect(page.locator(f"#e-{dom_id('gate')} textarea[name=scene]")).to_have_value("first edit")
        save_scene(page, "gate", "second edit")  # accepted: the page's version is the file's
        assert "        scene: second edit" in story.read_text().splitlines()

        # Candidates: the count typed stays, and the grid is in the order the files were rendered.
        z = zone(page, "gate")
        z.locator("form.cands input").fill("4")
        z.locator("form.cands button").click()
        expect(z.locator("figure.candidate:not(.pending) img")).to_have_count(4, timeout=WAIT_MS)
        wait_done(page, "gate")
        expect(z.locator("form.cands input")).to_have_value("4")
        folder = project / "output" / "demo" / "draft" / "candidates" / "gate"
        by_time = sorted(folder.glob("seed-*.png"), key=lambda f: f.stat().st_mtime_ns)
        rendered = [int(f.stem[5:]) for f in by_time]

        def shown(z: Any = z) -> list[int]:
            return [
                int(s) for s in z.locator("figure.candidate").evaluate_all("e => e.map(x => x.dataset.seed)")
            ]

        assert shown() == rendered

        pick = z.locator("figure.candidate:not(.current)").last
        picked = int(pick.get_attribute("data-seed") or "")
        text = story.read_text()
        pick.locator("button.pick").click()
        expect(z.locator(".seed-value")).to_have_text(str(picked))
        assert changed_lines(text, story.read_text()) == [f"+        seed: {picked}"]
        assert seeds_of(story)["gate"] == picked
        wait_done(page, "gate")
        expect(z.locator("form.cands input")).to_have_value("4")  # still what the user typed
        assert shown() == rendered  # a pick does not reorder them
        page.reload()
        z = zone(page, "gate")
        expect(z.locator("form.cands input")).to_have_value("4")
        assert shown(zone(page, "gate")) == rendered
        save_scene(page, "gate", "third edit")  # after a pick, saves still go to the same file
        assert seeds_of(story)["gate"] == picked
        assert "        scene: third edit" in story.read_text().splitlines()
        page.goto("about:blank")
    assert not (project / "stories" / "stories").exists()
    assert sorted(p.name for p in (project / "stories").iterdir()) == sorted(
        p.name for p in (ROOT / "stories").iterdir()
    )
