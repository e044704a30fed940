"""`check --fix` tries the face detailer first (fake renders, stand-in check models, as
tests/test_check_fix.py does for rerolls), and records it in the story file by one line."""

from __future__ import annotations

from pathlib import Path

from check_helpers import GREEN, RED, STORY, draw_panel, make_input

from storyboard.check.ccip import CcipBackend
from storyboard.check.detail_fix import detail_first
from storyboard.check.detect import YoloDetector
from storyboard.check.run import run_check
from storyboard.check.standin import write_all
from storyboard.story.detail_edit import enable_detail
from storyboard.story.load import load_story
from tests.story_helpers import changed_lines
from tests.test_check_fix import STORY_YAML


def strip_of(panel_id: str) -> int:
    return next(figs for pid, _, figs in STORY if pid == panel_id)[0][0]


def test_detail_kept_when_closer_else_not(tmp_path: Path) -> None:
    m = write_all(tmp_path / "models")
    backend, det = CcipBackend.open(m["ccip"]), YoloDetector.open(m["detector"])
    inp = make_input(tmp_path / "out")
    report = run_check(inp, backend, det, None)
    assert report.flagged_panels == ["p2.1"]
    for colour, kept in ((RED, True), (GREEN, False)):
        recorded: list[str] = []

        def try_detail(pid: str, colour: tuple[int, int, int] = colour) -> Path:
            return draw_panel(tmp_path / "detail" / f"{pid}-{colour}.png", [(strip_of(pid), colour)])

        fixes = detail_first(
            report, inp, backend=backend, detector=det, try_detail=try_detail, record_detail=recorded.append
        )
        assert recorded == (["p2.1"] if kept else [])
        assert [(f.panel_id, f.passed) for f in fixes] == ([("p2.1", True)] if kept else [])
        if kept:
            assert fixes[0].before > 1.0 >= fixes[0].after
    # A panel the detailer cannot take (no detectors, detailed already) is left to the rerolls.
    assert (
        detail_first(
            report, inp, backend=backend, detector=det, try_detail=lambda p: None, record_detail=print
        )
        == []
    )


def test_recording_the_detailer_is_one_line_in_the_story(tmp_path: Path) -> None:
    story = tmp_path / "story.yaml"
    story.write_text(STORY_YAML)
    before = story.read_text()
    enable_detail(story, "p2.1")
    after = story.read_text()
    assert changed_lines(before, after) == ["+        render: {detail: {}}"]
    assert "# drifted to green" in after
    loaded = load_story(story)
    assert loaded.panel_render["p2.1"].detail is not None and loaded.panel_render["p1.1"].detail is None
