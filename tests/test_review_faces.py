"""The face detailer on the review page, in a real browser (Playwright, Debian's Chromium), with the
tiny model and the stand-in face detector in a Hugging Face cache layout: the boxes the PNG's
infotext lists are drawn over the picture at their places with their characters' names; "Re-draw"
on one face writes its seed into the story (relative story path, cwd = the project) and the panel
renders again, changed only inside that face's dilated, blurred mask."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storyboard.check.detail_models import FACE
from storyboard.check.standin_detail import write_face_detector
from storyboard.models.tiny import TinyModel
from storyboard.render import inpaint_mask as im
from storyboard.render.detail import adetailer_box
from storyboard.render.detail_pass import detail_faces
from storyboard.review.server import dom_id
from tests.review_helpers import changed_lines, live_server
from tests.test_review_browser import WAIT_MS, browser, page  # noqa: F401 (fixtures)

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - test_review_browser skips or fails the same way
    pytest.skip("playwright missing", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 128  # render.width/height; the panel's own size comes from the page layout
FACES = [(0.1, 0.2, 0.3, 0.4), (0.65, 0.2, 0.85, 0.4), (0.4, 0.75, 0.5, 0.85)]
SCORES = [0.9, 0.8, 0.6]  # the third: a crowd face, nobody's

STORY = """\
title: Faces
characters:
  a: {{lora: tiny_character_v1, weight: 1, triggers: [1girl, red hair]}}
  b: {{lora: tiny-style, weight: 0.8, triggers: [1boy]}}
render:
  model: tiny-sd
  sampler: Euler
  steps: 3
  width: {size}
  height: {size}
  noise_source: cpu
  webui_root: {root}
  # small padding: each face's "only masked" crop stays clear of the other face
  detail: {{denoising_strength: 0.5, inpaint_only_masked_padding: 8}}
layout: {{formats: [png], dpi: 20, page_numbers: false}}
pages:
  - panels:
      - {{id: two, scene: garden, characters: [a, b], seed: 5}}
"""




def mask_of(
    box: tuple[int, int, int, int], size: tuple[int, int], dilate: int = 4, blur: int = 4
) -> np.ndarray:
    """The face's dilated, blurred mask (render/detail.py's steps), True where it touches."""
    w, h = size
    grown = adetailer_box(box, dilate, size)
    fractions = [grown[0] / w, grown[1] / h, grown[2] / w, grown[3] / h]
    return np.asarray(im.blur_mask(im.box_mask(size, fractions), blur)) > 0


def test_boxes_drawn_with_names_and_one_face_redrawn(
    page: Page, tmp_path: Path, tiny: TinyModel, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import huggingface_hub.constants as hf_constants

    project = tmp_path / "project"
    project.mkdir()
    (project / "s.yaml").write_text(STORY.format(size=SIZE, root=os.path.relpath(tiny.root, project)))
    hf = tmp_path / "hf"
    write_face_detector(
        hf / f"models--{FACE.repo.replace('/', '--')}" / "snapshots" / FACE.revision, FACES, SCORES
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf))  # read at call time by the cache look-up
    monkeypatch.chdir(project)
    story, out = Path("s.yaml"), Path("output")
    with live_server(story, out, draft=False) as live:
        job = live.session.queue.submit("render", "two")
        assert live.session.queue.wait_idle(600)
        assert job.state == "done", job.error
        png = project / "output" / "s" / "panels" / "two.png"
        before_img = Image.open(png)
        faces = detail_faces(str(before_img.info["parameters"]))
        before = np.asarray(before_img.convert("RGB"))
        # Re-drawn faces first, then the crowd face (nobody's); seeds = panel seed + 1 + the index
        # left to right, where the crowd face counts (it sits between a and b).
        assert [(f.character, f.seed) for f in faces] == [("a", 6), ("b", 8), (None, None)]
        page.goto(live.url)
        render = page.locator(f"#r-{dom_id('two')}")
        img = render.locator(".image img")
        expect(render.locator(".face-box")).to_have_count(3)
        ib = img.bounding_box()
        assert ib is not None
        for f, box in zip(faces, render.locator(".face-box").all(), strict=True):
            bb = box.bounding_box()
            assert bb is not None
            # The panel's size comes from the page layout, not render.width/height.
            sx, sy = ib["width"] / before_img.width, ib["height"] / before_img.height
            got = [(bb["x"] - ib["x"]) / sx, (bb["y"] - ib["y"]) / sy]
            got += [got[0] + bb["width"] / sx, got[1] + bb["height"] / sy]
            assert np.allclose(got, f.box, atol=1.0), (got, f.box)
            expect(box.locator(".face-label")).to_have_text(f.character or "nobody")
        # Re-draw a's face: the story gains its seed, the panel renders again.
        text = story.read_text()
        button = render.locator("li[data-character=a] button.redraw-face")
        expect(button).to_contain_text("seed 7")
        expect(render.locator("li[data-character=''] button")).to_have_count(0)  # nobody's: no button
        button.click()
        # The page shows the new render's seed, read back from its infotext, once it is done.
        expect(render.locator("li[data-character=a] .face-seed")).to_have_text("7", timeout=WAIT_MS * 3)
        assert live.session.queue.wait_idle(600)
        page.goto("about:blank")  # leave before the server stops: no polling request is cut off
        assert changed_lines(text, story.read_text()) == [
            "-      - {id: two, scene: garden, characters: [a, b], seed: 5}",
            "+      - {id: two, scene: garden, characters: [a, b], seed: 5, "
            "render: {detail: {seeds: {a: 7}}}}",
        ]
        after_img = Image.open(png)
        after = np.asarray(after_img.convert("RGB"))
        again = detail_faces(str(after_img.info["parameters"]))
        assert [(f.character, f.box) for f in again] == [(f.character, f.box) for f in faces]
        assert [f.seed for f in again] == [7] + [f.seed for f in faces[1:]]
        a_box = next(f.box for f in faces if f.character == "a")
        inside = mask_of(a_box, before_img.size)
        assert np.array_equal(before[~inside], after[~inside])  # outside a's mask: the same bytes
        assert not np.array_equal(before[inside], after[inside])  # inside: re-drawn


def test_redraw_face_refuses_a_stale_page_and_a_panel_without_the_detailer(tmp_path: Path) -> None:
    from storyboard.app import review_ops
    from storyboard.errors import StoryboardError

    story = tmp_path / "s.yaml"
    story.write_text(STORY.format(size=SIZE, root="webui").replace("  detail: {", "  # detail: {"))
    version = review_ops.story_version(story)
    with pytest.raises(StoryboardError, match="no face detailer for character 'a'"):
        review_ops.redraw_face(story, "two", "a", 7, version=version)
    story.write_text(STORY.format(size=SIZE, root="webui"))
    with pytest.raises(review_ops.StaleStoryError):
        review_ops.redraw_face(story, "two", "a", 7, version=version)
    before = story.read_text()
    new = review_ops.redraw_face(story, "two", "b", 9, version=review_ops.story_version(story))
    assert new == review_ops.story_version(story)
    assert changed_lines(before, story.read_text())[-1].endswith("render: {detail: {seeds: {b: 9}}}}")
