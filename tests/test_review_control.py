"""Issue 23 item 7 in a real browser: `storyboard review stories/demo.yaml --draft --no-open` from a
copy of the repository, with a RELATIVE story path. The Direct box's ControlNet unit: upload a
control image, Preview shows the preprocessed map (the renderer's own preprocess) beside the draft,
set weight and guidance range, Keep writes the panel's `control:` unit (picture copied beside the
story, comments kept), a reload shows the kept unit in the form. On a panel with two units, picking
the second and changing its weight changes only that line of the story file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from storyboard.review.server import dom_id
from storyboard.story.load import load_story
from storyboard.story.plan import plan
from tests.story_helpers import changed_lines
from tests.test_paths_as_typed import copy_repo
from tests.test_paths_review_page import review
from tests.test_review_browser import browser, page  # noqa: F401 (fixtures)
from tests.test_review_units import add_depth_unit

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - test_review_browser skips the module first
    import pytest

    pytest.skip("playwright missing", allow_module_level=True)


def test_upload_a_control_image_see_its_map_set_weight_and_range_keep(page: Page, tmp_path: Path) -> None:  # noqa: F811
    project = copy_repo(tmp_path)
    story = project / "stories" / "demo.yaml"
    job = next(j for j in plan(load_story(story)) if j.panel_id == "gate")
    w, h = job.settings.width, job.settings.height
    rng = np.random.default_rng(7)
    pose = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(pose).save(tmp_path / "pose.png")
    before = story.read_text()
    server = review(project, "stories/demo.yaml")
    url = next(server)
    try:
        page.goto(url)
        box = page.locator(f"#d-{dom_id('gate')}")
        box.locator("summary").click()
        box.locator("select[name=control]").select_option("new")
        box.locator(".d-control-file").set_input_files(str(tmp_path / "pose.png"))
        box.locator("select[name=control_module]").select_option("invert")
        box.locator("input[name=control_model]").fill("control_v11p_sd15_lineart")
        box.locator("input[name=control_weight]").fill("0.7")
        box.locator("input[name=guidance_start]").fill("0.1")
        box.locator("input[name=guidance_end]").fill("0.8")
        box.locator("button.d-preview").click()
        box = page.locator(f"#d-{dom_id('gate')}")
        expect(box.locator(".d-preview-image img")).to_be_visible()
        shown = box.locator(".d-control-map img")
        expect(shown).to_be_visible()
        # The map on the page is the preprocessor's output: invert, at the panel's size.
        got = page.request.get(url.rstrip("/") + str(shown.get_attribute("src")))
        assert got.ok
        mapped = np.asarray(Image.open(io.BytesIO(got.body())).convert("RGB"))
        assert mapped.shape == pose.shape
        assert (mapped == 255 - pose).all()
        assert story.read_text() == before  # a preview writes nothing beside the story

        box.locator("button.d-keep").click()
        expect(page.locator(f"#d-{dom_id('gate')}").locator(".d-msg")).to_contain_text("Kept")
        diff = changed_lines(before, story.read_text())
        # The panel's unit (a pose from the demo) is changed in place: its comment and style stay.
        assert diff == [
            "-          - image: control/pose-pointing.png",
            "-            module: none",
            "-            model: control_v11p_sd15_openpose",
            "-            weight: 0.9",
            "+          - image: inputs/gate-control.png",
            "+            module: invert",
            "+            model: control_v11p_sd15_lineart",
            "+            weight: 0.7",
            "+            guidance_start: 0.1",
        ], diff
        unit = load_story(story).story.panel("gate").control
        assert unit is not None and len(unit) == 1
        u = unit[0]
        assert (str(u.image), u.module, u.model) == (
            "inputs/gate-control.png",
            "invert",
            "control_v11p_sd15_lineart",
        )
        assert (u.weight, u.guidance_start, u.guidance_end) == (0.7, 0.1, 0.8)
        kept = np.asarray(Image.open(story.parent / "inputs" / "gate-control.png").convert("RGB"))
        assert (kept == pose).all()
        # Comments elsewhere in the file are kept: only the unit's lines were added.
        assert [line for line in story.read_text().splitlines() if "#" in line] == [
            line for line in before.splitlines() if "#" in line
        ]

        page.reload()
        box = page.locator(f"#d-{dom_id('gate')}")
        box.locator("summary").click()
        expect(box.locator("select[name=control]")).to_have_value("keep")
        expect(box.locator("select[name=control_module]")).to_have_value("invert")
        expect(box.locator("input[name=control_model]")).to_have_value("control_v11p_sd15_lineart")
        expect(box.locator("input[name=control_weight]")).to_have_value("0.7")
        expect(box.locator("input[name=guidance_start]")).to_have_value("0.1")
        expect(box.locator("input[name=guidance_end]")).to_have_value("0.8")
        page.goto("about:blank")
    finally:
        server.close()  # the generator's finally stops the server


def test_pick_the_second_unit_change_its_weight_keep(page: Page, tmp_path: Path) -> None:  # noqa: F811
    """A panel with two units (the demo's pose, a depth map added): the box lists both; picking the
    second shows its settings in the form; its new weight, previewed and kept, is the one line of
    the story file that changes."""
    project = copy_repo(tmp_path)
    story = project / "stories" / "demo.yaml"
    depth = add_depth_unit(story)
    before = story.read_text()
    server = review(project, "stories/demo.yaml")
    url = next(server)
    try:
        page.goto(url)
        box = page.locator(f"#d-{dom_id('gate')}")
        box.locator("summary").click()
        images = ["control/pose-pointing.png", "control/gate-depth.png"]
        expect(box.locator(".d-unit-image")).to_have_text(images)
        expect(box.locator("input[name=control_weight]")).to_have_value("0.9")  # the first, at first
        box.locator("input[name=control_unit][value='1']").check()
        expect(box.locator("input[name=control_model]")).to_have_value("control_v11f1p_sd15_depth")
        expect(box.locator("input[name=control_weight]")).to_have_value("0.6")
        expect(box.locator("select[name=control]")).to_have_value("keep")
        box.locator("input[name=control_weight]").fill("0.35")
        box.locator("button.d-preview").click()
        box = page.locator(f"#d-{dom_id('gate')}")
        expect(box.locator(".d-preview-image img")).to_be_visible()
        expect(box.locator("input[name=control_unit][value='1']")).to_be_checked()
        # Each unit's own map beside it; the depth unit's is its picture (module none).
        expect(box.locator(".d-control-map img")).to_have_count(2)
        src = box.locator(".d-control-map img").nth(1).get_attribute("src")
        got = page.request.get(url.rstrip("/") + str(src))
        assert got.ok
        assert (np.asarray(Image.open(io.BytesIO(got.body())).convert("RGB")) == depth).all()
        assert story.read_text() == before

        box.locator("button.d-keep").click()
        expect(page.locator(f"#d-{dom_id('gate')}").locator(".d-msg")).to_contain_text("Kept")
        assert changed_lines(before, story.read_text()) == [
            "-            weight: 0.6",
            "+            weight: 0.35",
        ]
        units = load_story(story).story.panel("gate").control
        assert units is not None and [u.weight for u in units] == [0.9, 0.35]
        expect(page.locator(f"#d-{dom_id('gate')}").locator(".d-unit-weight")).to_have_text(["0.9", "0.35"])
        page.goto("about:blank")
    finally:
        server.close()
