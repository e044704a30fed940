"""Balloons in dialogue order along the reading direction; crowded panels are reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from storyboard.errors import StoryboardError
from storyboard.layout import Balloon, LayoutMeta, LayoutPage, LayoutPanel, LayoutSettings, render_comic
from storyboard.layout.lettering import reads_after
from storyboard.layout.types import PanelPlacement


def _meet(tmp: Path, rtl: bool) -> PanelPlacement:
    """The demo's second page (establishing-1-2): in `meet` Haru (right) speaks before Iku (left)."""
    imgs = []
    for name, size in (("meet", (1280, 640)), ("play", (640, 896)), ("smile", (640, 896))):
        Image.new("RGB", size, (200, 210, 220)).save(tmp / f"{name}.png")
        imgs.append(tmp / f"{name}.png")
    meet = LayoutPanel(
        "meet",
        imgs[0],
        balloons=[
            Balloon("Oh! You heard that?", "Haru", speaker_at=(0.7, 0.3)),
            Balloon("It sounded lovely. Play it again?", "Iku", speaker_at=(0.3, 0.35)),
        ],
    )
    page = LayoutPage(
        1, [meet, LayoutPanel("play", imgs[1]), LayoutPanel("smile", imgs[2])], "establishing-1-2"
    )
    settings = LayoutSettings(formats=("pdf",), reading_direction="rtl" if rtl else "ltr")
    out = render_comic(LayoutMeta("Garden", language="en"), [page], settings, tmp / "out")
    return next(p for p in out.placements if p.panel_id == "meet")


@pytest.mark.parametrize("rtl", [False, True], ids=["ltr", "rtl"])
def test_meet_balloons_in_reading_order(tmp_path: Path, rtl: bool) -> None:
    pl = _meet(tmp_path, rtl)
    haru, iku = pl.balloons
    assert haru.text.startswith("Oh!")
    # Haru's balloon is met first: Iku's reply is lower than its middle, or level and further along.
    assert reads_after(haru.rect, iku.rect, rtl)
    assert not reads_after(iku.rect, haru.rect, rtl)
    if rtl:  # Haru's balloon on the right is read first: Iku's may sit level with it, on the left
        assert iku.rect.x1 <= haru.rect.x and iku.rect.y1 <= haru.rect.y1
    else:  # Iku's reply cannot sit left of Haru's at his height: it goes lower
        assert haru.rect.y1 > iku.rect.y1 and iku.rect.y1 <= haru.rect.y + 0.25 * haru.rect.h
    assert not haru.rect.overlaps(iku.rect)
    for bal in (haru, iku):
        assert pl.rect.contains(bal.rect)
        assert bal.tail_tip is not None and bal.speaker_point is not None
    # Tails still aim at their own speakers: Haru's right of Iku's.
    assert haru.speaker_point[0] > iku.speaker_point[0]  # type: ignore[index]


def test_reads_after_rules() -> None:
    from storyboard.layout.types import Rect

    a = Rect(0, 80, 40, 20)
    assert reads_after(a, Rect(50, 80, 40, 20), rtl=False)  # level, to the right
    assert not reads_after(a, Rect(50, 80, 40, 20), rtl=True)
    assert reads_after(a, Rect(-50, 80, 40, 20), rtl=True)
    assert reads_after(a, Rect(0, 50, 40, 20), rtl=False)  # below
    assert not reads_after(a, Rect(0, 75, 40, 20), rtl=False)  # a near tie in height is not enough
    assert not reads_after(a, Rect(0, 85, 40, 20), rtl=False)  # higher: read first


def test_crowded_panel_names_itself(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    lines = [Balloon(f"Line number {i}, which is long enough to need room.", f"S{i}") for i in range(14)]
    page = LayoutPage(1, [LayoutPanel("crowd", tmp_path / "x.png", balloons=lines)] * 1)
    with pytest.raises(StoryboardError, match=r"panel crowd.*reading order"):
        render_comic(
            LayoutMeta("x"),
            [page],
            LayoutSettings(formats=("pdf",), page_size=(60, 60), margin_mm=5),
            tmp_path / "out",
        )
