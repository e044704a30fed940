"""Layout templates: shipped data files, lookup, automatic choice and panel geometry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from storyboard.errors import StoryboardError
from storyboard.layout.geometry import fit_image, panel_rects, print_pixels
from storyboard.layout.pagesize import MM, page_geometry
from storyboard.layout.templates import (
    PACKAGE_TEMPLATES,
    choose_template,
    get_template,
    grid_template,
    list_templates,
    parse_template,
)
from storyboard.layout.types import LayoutSettings, Rect

REPO_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "layouts"


def test_shipped_copy_matches_repo_templates() -> None:
    repo = {p.name: p.read_bytes() for p in REPO_TEMPLATES.iterdir() if p.is_file()}
    pkg = {p.name: p.read_bytes() for p in PACKAGE_TEMPLATES.iterdir() if p.is_file()}
    assert repo, "templates/layouts is empty"
    assert repo == pkg, "copy templates/layouts/* to storyboard/data/layouts/ (templates/ is the source)"


def test_every_template_tiles_the_live_area() -> None:
    templates = list_templates()
    for name in ("splash", "2x2", "three-tiers", "2-3-2", "establishing-1-2", "big-left-2", "nine-grid"):
        assert name in templates
    for tpl in templates.values():
        area = sum(w * h for (_x, _y, w, h) in tpl.panels)
        assert area == pytest.approx(1.0, abs=1e-9), tpl.name


def test_unknown_template_suggests_close_names() -> None:
    with pytest.raises(StoryboardError) as err:
        get_template("tree-tiers", list_templates())
    assert "three-tiers" in str(err.value)
    assert "unknown layout template 'tree-tiers'" in str(err.value)


def test_user_dir_overrides_and_json(tmp_path: Path) -> None:
    project = tmp_path / "templates" / "layouts"
    project.mkdir(parents=True)
    (project / "2x2.yaml").write_text("name: 2x2\ntiers:\n  - {height: 1, columns: [1, 3]}\n")
    (project / "duo.json").write_text(json.dumps({"panels": [[0, 0, 1, 0.25], [0, 0.25, 1, 0.75]]}))
    (tmp_path / "templates" / "prompts").mkdir()
    (tmp_path / "templates" / "prompts" / "x.yaml").write_text("not: a layout\n")
    # A templates root (as the prompt stage passes it) or the layouts folder itself; first one wins.
    for dirs in ([tmp_path / "templates", REPO_TEMPLATES.parent], [project, REPO_TEMPLATES]):
        templates = list_templates(dirs)
        assert templates["2x2"].panels == ((0.0, 0.0, 0.25, 1.0), (0.25, 0.0, 0.75, 1.0))
        assert templates["duo"].panels[1] == (0.0, 0.25, 1.0, 0.75)
        assert templates["two-tiers"].n_panels == 2  # shipped ones are still there
    assert list_templates([REPO_TEMPLATES, project])["2x2"].panels[0] == (0.0, 0.0, 0.5, 0.5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"panels": [[0, 0, 0.6, 1], [0.5, 0, 0.5, 1]]}, "overlap"),
        ({"panels": [[0, 0, 1.2, 1]]}, "within the page"),
        ({"tiers": [{"height": 1}]}, "columns"),
        ({"panels": [[0, 0, 1, 1]], "colour": "red"}, "unknown key"),
    ],
)
def test_bad_templates_are_user_errors(data: dict, message: str) -> None:
    with pytest.raises(StoryboardError, match=message):
        parse_template(data, "bad")


def test_choose_template_matches_aspects() -> None:
    templates = list_templates()
    live = 190 / 277
    # A wide establishing image then two portrait ones: the wide-over-two layout, not three strips.
    assert choose_template(3, [2.0, 0.8, 0.8], templates, live_aspect=live).name == "establishing-1-2"
    # A tall first image: the tall panel beside two stacked ones.
    assert choose_template(3, [0.45, 1.0, 1.0], templates, live_aspect=live).name == "big-left-2"
    assert choose_template(7, [1.0] * 7, templates).name == "2-3-2"
    assert choose_template(1, [0.7], templates).name == "splash"


def test_choose_template_cost_is_minimal() -> None:
    templates = list_templates()
    aspects = [1.3, 0.6, 1.9, 0.9]
    chosen = choose_template(4, aspects, templates, live_aspect=0.7)
    for tpl in templates.values():
        if tpl.n_panels == 4:
            cost = sum(abs(math.log(p / a)) for p, a in zip(tpl.aspects(0.7), aspects, strict=True))
            best = sum(abs(math.log(p / a)) for p, a in zip(chosen.aspects(0.7), aspects, strict=True))
            assert best <= cost + 1e-12


def test_grid_fallback_for_uncovered_counts() -> None:
    tpl = choose_template(10, [1.0] * 10, list_templates())
    assert tpl.name == "auto-10" and tpl.n_panels == 10
    # Rows of 2, 3, 3, 2: the fuller tiers in the middle.
    rows: dict[float, int] = {}
    for _x, y, _w, _h in tpl.panels:
        rows[round(y, 6)] = rows.get(round(y, 6), 0) + 1
    assert list(rows.values()) == [2, 3, 3, 2]
    assert grid_template(2).n_panels == 2


def test_panel_rects_gutters_and_rtl() -> None:
    settings = LayoutSettings(page_size="A4", margin_mm=10, gutter_mm=4)
    geo = page_geometry(settings)
    tpl = list_templates()["2x2"]
    g = 4 * MM
    ltr = panel_rects(tpl, geo, g, rtl=False)
    live_x, live_top = 10 * MM, (297 - 10) * MM
    half_w = (190 * MM - g) / 2
    half_h = (277 * MM - g) / 2
    assert ltr[0].x == pytest.approx(live_x)
    assert ltr[0].w == pytest.approx(half_w)
    assert ltr[0].y1 == pytest.approx(live_top)
    assert ltr[0].h == pytest.approx(half_h)
    assert ltr[1].x - ltr[0].x1 == pytest.approx(g)  # exactly one gutter between neighbours
    assert ltr[0].y - ltr[2].y1 == pytest.approx(g)
    rtl = panel_rects(tpl, geo, g, rtl=True)
    assert rtl[0].x1 == pytest.approx(live_x + 190 * MM)  # panel 1 on the right
    assert rtl[0].x > rtl[1].x
    assert rtl[0].y == pytest.approx(ltr[0].y)


def test_splash_runs_into_bleed() -> None:
    settings = LayoutSettings(page_size="A4", bleed_mm=3)
    geo = page_geometry(settings)
    (rect,) = panel_rects(list_templates()["splash"], geo, 4 * MM, rtl=False)
    assert (rect.x, rect.y) == (0.0, 0.0)
    assert rect.w == pytest.approx(216 * MM) and rect.h == pytest.approx(303 * MM)
    # Without a bleed the splash keeps to the margins.
    no_bleed = page_geometry(LayoutSettings(page_size="A4", margin_mm=12))
    (rect,) = panel_rects(list_templates()["splash"], no_bleed, 4 * MM, rtl=False)
    live = no_bleed.live
    assert (rect.x, rect.y, rect.w, rect.h) == pytest.approx((live.x, live.y, live.w, live.h))


def test_fit_crop_keeps_focus_and_aspect() -> None:
    panel = Rect(0, 0, 200, 100)  # 2:1
    fit = fit_image(400, 400, panel, "crop", focus=(0.5, 0.95))
    left, top, right, bottom = fit.crop
    assert (right - left, bottom - top) == (400, 200)
    assert bottom == 400  # slid to the bottom edge, the focus is near it
    assert fit.dest == panel
    fit = fit_image(1000, 100, Rect(0, 0, 100, 100), "crop", focus=(0.3, 0.5))
    assert fit.crop == (250, 0, 350, 100)  # centred on x = 300


def test_fit_letterbox_preserves_aspect() -> None:
    panel = Rect(10, 20, 200, 100)
    fit = fit_image(300, 600, panel, "letterbox", focus=(0.5, 0.5))
    assert fit.crop == (0, 0, 300, 600)
    assert fit.dest.h == pytest.approx(100) and fit.dest.w == pytest.approx(50)
    assert fit.dest.cx == pytest.approx(panel.cx) and panel.contains(fit.dest)
    assert print_pixels(Rect(0, 0, 72, 144), 300) == (300, 600)
