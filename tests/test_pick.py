"""`pick` writes a seed into the story file and changes nothing else: comments and formatting stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyboard.app.build import build, render_candidates
from storyboard.errors import StoryboardError
from storyboard.render.draft import DraftRenderer
from storyboard.story.load import load_story
from storyboard.story.pick import pick_seed
from storyboard.story.plan import plan
from tests.story_helpers import changed_lines, copy_demo

ROOT = Path(__file__).resolve().parents[1]


def test_pick_replaces_existing_seed_only(tmp_path):
    story = copy_demo(tmp_path)
    before = story.read_text()
    pick_seed(story, "play", 123)
    after = story.read_text()
    assert changed_lines(before, after) == ["-        seed: 3447412781", "+        seed: 123"]
    assert {j.panel_id: j.seed for j in plan(load_story(story))}["play"] == 123


def test_pick_adds_seed_after_scene_keeping_comments(tmp_path):
    story = copy_demo(tmp_path)
    before = story.read_text()
    pick_seed(story, "gate", 42)
    after = story.read_text()
    assert changed_lines(before, after) == ["+        seed: 42"]
    lines = after.splitlines()
    i = lines.index("        seed: 42")
    assert lines[i - 1].lstrip().startswith("scene: (full body:1.2), school gate")
    assert "# The demo story follows the WebUI LoRA tutorial's workflow" in after
    assert "webui_root: ../webui   # a WebUI install" in after


def test_pick_errors(tmp_path):
    story = copy_demo(tmp_path)
    with pytest.raises(StoryboardError, match="No panel 'gaet'.*gate"):
        pick_seed(story, "gaet", 1)
    with pytest.raises(StoryboardError, match="out of range"):
        pick_seed(story, "gate", 2**32)


def test_candidates_then_pick_reuses_the_render(tmp_path):
    story = copy_demo(tmp_path)
    out = tmp_path / "out"
    loaded = load_story(story)
    results, sheet = render_candidates(loaded, out, DraftRenderer(), "listen", [1, 2, 3])
    assert [s for s, _ in results] == [1, 2, 3] and all(p.is_file() for _, p in results)
    assert sheet.is_file()
    assert not (out / "demo" / "panels" / "listen.png").exists()  # candidates never replace a panel
    pick_seed(story, "listen", 2)

    class Counting(DraftRenderer):
        calls: list[str] = []

        def render(self, jobs):
            for r in super().render(jobs):
                self.calls.append(r.job.panel_id)
                yield r

    r = Counting()
    build(load_story(story), out, r, layout=False)
    assert "listen" not in r.calls and len(r.calls) == 6  # the demo's other panels
    assert (out / "demo" / "panels" / "listen.png").read_bytes() == results[1][1].read_bytes()
