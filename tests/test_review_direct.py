"""The review page's Direct box in a real browser (Playwright, Debian's Chromium, draft renderer):
attach an init image, preview, keep (picture beside the story, keys in the story file); draw a mask
on the canvas, preview, keep; preview a box and discard it (the story untouched)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from storyboard.review.server import dom_id
from storyboard.story.load import load_story
from storyboard.story.plan import plan
from tests.review_helpers import changed_lines, copy_demo, live_server
from tests.test_review_browser import WAIT_MS, browser, page  # noqa: F401 (fixtures)

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - test_review_browser skips or fails the same way
    pytest.skip("playwright missing", allow_module_level=True)




def direct(pg: Page, pid: str) -> Any:
    return pg.locator(f"#d-{dom_id(pid)}")


def test_attach_an_init_image_draw_a_mask_preview_keep_and_discard(page: Page, tmp_path: Path) -> None:  # noqa: F811
    story = copy_demo(tmp_path / "project")
    out = tmp_path / "out"
    rough = np.zeros((60, 40, 3), dtype=np.uint8)
    rough[10:50, 15:25] = 255
    Image.fromarray(rough).save(tmp_path / "my-rough.png")
    with live_server(story, out, draft=True) as live:
        page.goto(live.url)
        # 1. gate: a new init image, previewed, then kept.
        box = direct(page, "gate")
        box.locator("summary").click()
        box.locator("select[name=init]").select_option("new")
        box.locator(".d-init-file").set_input_files(str(tmp_path / "my-rough.png"))
        box.locator("select[name=resize_mode]").select_option("Crop and resize")
        before = story.read_text()
        box.locator("button.d-preview").click()
        expect(direct(page, "gate").locator(".d-preview-image img")).to_be_visible()
        # The form still says what was previewed (Keep keeps exactly that).
        expect(direct(page, "gate").locator("select[name=resize_mode]")).to_have_value("Crop and resize")
        expect(direct(page, "gate").locator("select[name=init]")).to_have_value("new")
        assert story.read_text() == before  # a preview writes nothing beside the story
        root = out / "demo" / "draft"
        assert (root / "direct" / "gate" / "preview.png").is_file()
        direct(page, "gate").locator("button.d-keep").click()
        expect(direct(page, "gate").locator(".d-msg")).to_contain_text("Kept")
        assert changed_lines(before, story.read_text()) == [
            "+        init_image: inputs/gate-init.png",
            "+        denoising_strength: 0.75",
            "+        resize_mode: Crop and resize",
        ]
        kept = np.asarray(Image.open(story.parent / "inputs" / "gate-init.png").convert("RGB"))
        assert (kept == rough).all()
        assert not (root / "direct" / "gate").exists()
        expect(page.locator(f"#r-{dom_id('gate')}")).to_have_attribute("data-state", "done")

        # 2. listen: a mask drawn on the canvas (over the panel's render), kept.
        box = direct(page, "listen")
        box.locator("summary").click()
        box.locator("select[name=mask]").select_option("draw")
        box.locator("input[name=mask_blur]").fill("2")
        canvas = box.locator("canvas.d-canvas")
        canvas.scroll_into_view_if_needed()
        b = canvas.bounding_box()
        assert b is not None
        page.mouse.move(b["x"] + b["width"] * 0.3, b["y"] + b["height"] * 0.5)
        page.mouse.down()
        page.mouse.move(b["x"] + b["width"] * 0.6, b["y"] + b["height"] * 0.5, steps=8)
        page.mouse.up()
        before = story.read_text()
        box.locator("button.d-preview").click()
        expect(direct(page, "listen").locator(".d-preview-image img")).to_be_visible()
        direct(page, "listen").locator("button.d-keep").click()
        expect(direct(page, "listen").locator(".d-msg")).to_contain_text("Kept")
        assert changed_lines(before, story.read_text()) == [
            "+        denoising_strength: 0.75",
            "+        inpaint: {mask: inputs/listen-mask.png, mask_blur: 2, masked_content: original}",
        ]
        mask = np.asarray(Image.open(story.parent / "inputs" / "listen-mask.png").convert("L"))
        job = next(j for j in plan(load_story(story))
                   if j.panel_id == "listen")  # fmt: skip
        assert mask.shape == (job.output_size[1], job.output_size[0])
        h, w = mask.shape
        assert mask[h // 2, int(w * 0.45)] == 255 and mask[5, 5] == 0  # the stroke, and not elsewhere

        # 3. garden: a box previewed, then discarded: nothing written.
        before = story.read_text()
        box = direct(page, "garden")
        box.locator("summary").click()
        box.locator("select[name=mask]").select_option("box")
        box.locator("button.d-preview").click()
        expect(direct(page, "garden").locator(".d-preview-image img")).to_be_visible()
        direct(page, "garden").locator("button.d-discard").click()
        expect(direct(page, "garden").locator(".d-msg")).to_contain_text("Discarded")
        expect(direct(page, "garden").locator(".d-preview-image")).to_have_count(0)
        assert story.read_text() == before
        assert not (root / "direct" / "garden").exists()
        if os.environ.get("STORYBOARD_REVIEW_SHOTS"):
            page.screenshot(path=str(Path(os.environ["STORYBOARD_REVIEW_SHOTS"]) / "direct.png"))
        page.goto("about:blank")  # leave before the server stops: no polling request is cut off
