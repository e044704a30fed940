"""img2img and inpaint with a ControlNet unit on the tiny model: both steer the one pass; weight 0
is byte-identical to no unit; the inpaint still keeps every pixel outside its blurred box."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from storyboard.app.build import build
from storyboard.jobs import job_hash
from storyboard.models.tiny import TinyModel
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.infotext import parse_infotext
from storyboard.story.load import load_story
from storyboard.story.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")

UNIT = "[{{image: pose.png, model: tiny-control, weight: {w}}}]"


def test_img2img_and_inpaint_with_a_controlnet(tmp_path: Path, tiny: TinyModel) -> None:
    pose = Image.new("RGB", (64, 64))
    ImageDraw.Draw(pose).line([(32, 8), (32, 40), (18, 60)], fill=(255, 0, 0), width=3)
    pose.save(tmp_path / "pose.png")
    rough = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(rough).ellipse([20, 10, 44, 34], outline="black", width=2)
    rough.save(tmp_path / "rough.png")
    panel = "  - panels:\n      - {{id: {pid}, seed: 7, scene: 1girl, {extra}}}\n"
    rows = {
        "i0": "init_image: rough.png",
        "i1": "init_image: rough.png, control: " + UNIT.format(w=1),
        "iw0": "init_image: rough.png, control: " + UNIT.format(w=0),
        "p1": "control: " + UNIT.format(w=1) + ", inpaint: {box: [0.25, 0.25, 0.75, 0.75], mask_blur: 2}",
    }
    story = tmp_path / "s.yaml"
    story.write_text(
        f"title: C\nrender: {{model: tiny-sd, sampler: Euler, steps: 6, width: 64, height: 64, "
        f"webui_root: {tiny.root}}}\npages:\n"
        + "".join(panel.format(pid=k, extra=v) for k, v in rows.items())
    )
    loaded = load_story(story)
    jobs = {j.panel_id: j for j in plan(loaded)}
    renderer = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    build(loaded, tmp_path / "out", renderer, layout=False)

    def png(pid: str) -> bytes:
        return (tmp_path / "out" / "s" / "panels" / f"{pid}.png").read_bytes()

    def px(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    assert (px(png("iw0")) == px(png("i0"))).all()  # weight 0: exactly img2img alone
    assert (px(png("i1")) != px(png("i0"))).any()  # the unit steers the img2img pass
    info = parse_infotext(Image.open(io.BytesIO(png("i1"))).info["parameters"])
    assert info["Denoising strength"] == "0.75" and "ControlNet 0" in info
    # The inpaint: the stored base (the panel with its unit, no inpaint) kept outside the box + blur.
    base = jobs["p1"].base
    assert base is not None and base.control
    stored = (tmp_path / "out" / "s" / "cache").rglob(f"{job_hash(base, renderer)}.png")
    before = px(next(stored).read_bytes())
    after = px(png("p1"))
    h, w = after.shape[:2]
    r = int(2.5 * 2 + 0.5)
    reach = np.zeros((h, w), dtype=bool)
    reach[round(0.25 * h) - r : round(0.75 * h) + r, round(0.25 * w) - r : round(0.75 * w) + r] = True
    assert (after[~reach] == before[~reach]).all() and (after[reach] != before[reach]).any()
