"""`check --fix` with fake renderers: only the flagged panel changes, the story file by one line."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
from check_helpers import GREEN, RED, STORY, draw_panel, make_input

from storyboard.check.ccip import CcipBackend
from storyboard.check.detect import YoloDetector
from storyboard.check.fix import fix_panels, reroll_seeds
from storyboard.check.run import run_check
from storyboard.check.standin import write_all
from storyboard.story.pick import pick_seed

STORY_YAML = """\
# a story for the fix test; comments must survive the pick
title: Test Story
characters:
  aki:
    lora: aki_v1   # the red one
  ben:
    lora: ben_v1
pages:
  - panels:
      - id: p1.1
        scene: aki at the gate
        characters: [aki]
      - id: p1.2
        scene: ben waves
        characters: [ben]
      - id: p1.3
        scene: both
        characters: [aki, ben]
  - panels:
      - id: p2.1
        scene: aki again   # drifted to green
        characters: [aki]
      - id: p2.2
        scene: aki once more
        characters: [aki]
      - id: p2.3
        scene: ben alone
        characters: [ben]
"""


def test_reroll_seeds_are_new_and_reproducible() -> None:
    seeds = reroll_seeds("p2.1", 123, 8)
    assert len(set(seeds)) == 8 and 123 not in seeds
    assert seeds == reroll_seeds("p2.1", 123, 8)
    assert seeds != reroll_seeds("p2.2", 123, 8)


def test_fix_rerenders_only_the_flagged_panel(tmp_path: Path) -> None:
    m = write_all(tmp_path / "models")
    backend, det = CcipBackend.open(m["ccip"]), YoloDetector.open(m["detector"])
    story = tmp_path / "story.yaml"
    story.write_text(STORY_YAML)
    inp = make_input(tmp_path / "out")
    cache = tmp_path / "out" / "check" / "cache"
    report = run_check(inp, backend, det, cache)
    assert report.flagged_panels == ["p2.1"]
    before = {p.panel_id: p.image.read_bytes() for p in inp.panels}
    story_before = story.read_text()

    calls: list[tuple[str, list[int]]] = []
    candidate_files: dict[int, Path] = {}

    def render_candidates(panel_id: str, seeds: list[int]) -> list[Path]:
        calls.append((panel_id, list(seeds)))
        strip = next(figs for pid, _, figs in STORY if pid == panel_id)[0][0]
        out = []
        for s in seeds:
            # even seeds bring Aki back to red; odd ones keep her green
            path = draw_panel(
                tmp_path / "cand" / panel_id / f"seed-{s}.png", [(strip, RED if s % 2 == 0 else GREEN)]
            )
            candidate_files[s] = path
            out.append(path)
        return out

    def record_pick(panel_id: str, seed: int) -> None:
        pick_seed(story, panel_id, seed)
        shutil.copyfile(candidate_files[seed], tmp_path / "out" / "panels" / f"{panel_id}.png")

    result = fix_panels(
        report,
        inp,
        backend=backend,
        detector=det,
        render_candidates=render_candidates,
        record_pick=record_pick,
        tries=6,
        cache_dir=cache,
    )
    seeds = reroll_seeds("p2.1", inp.panels[3].seed, 6)
    expected = next(s for s in seeds if s % 2 == 0)
    assert calls == [("p2.1", seeds)]  # one batched call, for the flagged panel only
    assert [(c.panel_id, c.new_seed, c.passed) for c in result.changes] == [("p2.1", expected, True)]
    assert result.still_failing == [] and result.report.flagged_panels == []
    for p in inp.panels:
        same = p.image.read_bytes() == before[p.panel_id]
        assert same == (p.panel_id != "p2.1"), p.panel_id
    diff = [
        line
        for line in difflib.unified_diff(story_before.splitlines(), story.read_text().splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff == [f"+        seed: {expected}"]  # one line added after p2.1's scene
    assert "# drifted to green" in story.read_text()
    # the check after the fix embeds nothing new: the picked candidate was embedded when it was scored
    assert result.report.embedded_panels == []  # candidates were embedded while scoring them


def test_fix_keeps_panel_when_no_candidate_is_closer(tmp_path: Path) -> None:
    m = write_all(tmp_path / "models")
    backend, det = CcipBackend.open(m["ccip"]), YoloDetector.open(m["detector"])
    inp = make_input(tmp_path / "out")
    report = run_check(inp, backend, det, None)
    picks: list[tuple[str, int]] = []

    def render_candidates(panel_id: str, seeds: list[int]) -> list[Path]:
        return [draw_panel(tmp_path / "c" / f"{s}.png", [(2, (30, 160, 160))]) for s in seeds]

    result = fix_panels(
        report,
        inp,
        backend=backend,
        detector=det,
        render_candidates=render_candidates,
        record_pick=lambda pid, s: picks.append((pid, s)),
        tries=2,
    )
    assert picks == [] and result.changes == []
    assert result.still_failing == ["p2.1"] and result.tried["p2.1"]


@pytest.mark.parametrize("tries", [1, 3])
def test_reroll_seed_count(tries: int) -> None:
    assert len(reroll_seeds("x", None, tries)) == tries
