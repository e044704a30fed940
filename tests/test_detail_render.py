"""The face detailer on the tiny random-weight model (CPU, fp32) with a stand-in face detector that
finds known boxes: each face re-drawn under its own character's LoRA set only, pixels outside the
blurred masks byte-identical, ADetailer's keys read back with the WebUI-format reader."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from storyboard.app.detail import CheckFaceFinder
from storyboard.check.standin_detail import write_face_detector
from storyboard.jobs import PanelJob
from storyboard.models.lora import read_lora
from storyboard.models.tiny import TinyModel
from storyboard.render import inpaint_mask as im
from storyboard.render.detail import adetailer_box, face_job
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.infotext import parse_infotext
from storyboard.story.load import load_story_text
from storyboard.story.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 128
# Where the stand-in detector "finds" faces (panel fractions): one in each character's column, and
# one straddling nobody's region far below (a crowd face: left alone).
FACES = [(0.1, 0.2, 0.3, 0.4), (0.65, 0.2, 0.85, 0.4)]
SCORES = [0.9, 0.8]

STORY = """\
title: Detail
characters:
  a: {{lora: tiny_character_v1, weight: 1, triggers: [1girl, red hair], detail: {{prompt: green eyes}}}}
  b: {{lora: tiny-style, weight: 0.8, triggers: [1boy, blue jacket]}}
render:
  model: tiny-sd
  sampler: Euler
  steps: 4
  cfg_scale: 7
  width: {size}
  height: {size}
  clip_skip: 2
  noise_source: cpu
  webui_root: {root}
{detail}
pages:
  - panels:
      - {{id: two, scene: garden, characters: [a, b], seed: 5}}
"""


def job(tiny: TinyModel, detail: str = "") -> PanelJob:
    text = STORY.format(root=tiny.root, size=SIZE, detail=detail)
    loaded = load_story_text(text, tiny.root / "detail.yaml")
    [j] = [replace(j, settings=loaded.panel_render[j.panel_id]) for j in plan(loaded)]
    return j


@pytest.fixture(scope="module")
def renderer(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> DiffusersRenderer:
    models = tmp_path_factory.mktemp("detectors")
    write_face_detector(models, FACES, SCORES)
    r = DiffusersRenderer(tmp_path_factory.mktemp("story"), quiet=True, device="cpu")
    r.face_finder = CheckFaceFinder([job(tiny, "  detail: {}")], models_dir=models)
    return r


def render(r: DiffusersRenderer, j: PanelJob) -> Any:
    [out] = list(r.render([j]))
    return out


def face_boxes() -> list[tuple[int, int, int, int]]:
    return [tuple(round(v * SIZE) for v in f) for f in FACES]  # type: ignore[misc]


def outside_every_mask(dilate: int = 4, blur: int = 4) -> np.ndarray:
    union = np.zeros((SIZE, SIZE), bool)
    for box in face_boxes():
        grown = adetailer_box(box, dilate, (SIZE, SIZE))
        mask = im.blur_mask(im.box_mask((SIZE, SIZE), [v / SIZE for v in grown]), blur)
        union |= np.asarray(mask) > 0
    return ~union


def test_detail_off_renders_todays_bytes(tiny: TinyModel, renderer: DiffusersRenderer) -> None:
    today, off = job(tiny), job(tiny, "  detail: {enabled: false}")
    assert off.spec_digest() == today.spec_digest() and off.detail is None
    a, b = render(renderer, today), render(renderer, off)
    assert a.image.tobytes() == b.image.tobytes() and a.infotext == b.infotext
    assert "ADetailer" not in a.infotext
    assert renderer.identity(today).payload() == renderer.identity(off).payload()


class Recorder(torch.nn.Module):
    """Records the patcher's active LoRA set at every UNet call, then runs the real UNet."""

    def __init__(self, unet: Any, patcher: Any) -> None:
        super().__init__()
        self.inner, self.patcher, self.dtype = unet, patcher, unet.dtype
        self.calls: list[Any] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        self.calls.append(self.patcher.active)
        return self.inner(x, t, **kw)


def signature(r: DiffusersRenderer, j: PanelJob) -> Any:
    rj = r.resolve(j)
    r.model.patcher.apply([(read_lora(x.file.path), x.use.te, x.use.unet) for x in rj.loras])
    sig = r.model.patcher.active
    r.model.patcher.restore()
    return sig


def test_each_face_redrawn_with_its_own_lora_only(tiny: TinyModel, renderer: DiffusersRenderer) -> None:
    plain = render(renderer, job(tiny))
    on = job(tiny, "  detail: {denoising_strength: 0.5}")
    a, b = on.detail.targets  # type: ignore[union-attr]
    assert [u.name for u in a.loras] == ["tiny_character_v1"] and [u.name for u in b.loras] == ["tiny-style"]
    den = renderer.model.denoiser
    rec = Recorder(den.unet, renderer.model.patcher)
    den.unet = rec
    try:
        t0 = time.perf_counter()
        out = render(renderer, on)
        seconds = time.perf_counter() - t0
    finally:
        den.unet = rec.inner
    out_calls = rec.calls
    boxes = face_boxes()
    jobs = [
        face_job(on, t, box, (SIZE, SIZE), k) for k, (t, box) in enumerate(zip((a, b), boxes, strict=True))
    ]
    sig = [signature(renderer, fj) for fj in jobs]
    assert sig[0] != sig[1]
    # The regional panel's own calls (as many as it makes with the detailer off), then each face:
    # int(4 * 0.5) + 1 = 3 steps, one call each (cond and uncond in one batch).
    panel_calls = len(rec.calls) - 6
    den.unet = rec = Recorder(rec.inner, renderer.model.patcher)
    try:
        render(renderer, job(tiny))
    finally:
        den.unet = rec.inner
    assert len(rec.calls) == panel_calls
    assert out_calls[panel_calls : panel_calls + 3] == [sig[0]] * 3  # face a: a's LoRA only
    assert out_calls[panel_calls + 3 :] == [sig[1]] * 3  # face b: b's LoRA only
    # Outside every dilated, blurred mask: the panel's own bytes. Inside each: re-drawn.
    before, after = np.asarray(plain.image), np.asarray(out.image)
    keep = outside_every_mask()
    assert np.array_equal(before[keep], after[keep])
    for x0, y0, x1, y1 in boxes:
        assert not np.array_equal(before[y0:y1, x0:x1], after[y0:y1, x0:x1])
    # The same faces re-drawn one by one through the img2img path give the same bytes; face a
    # under b's LoRA set instead (a measurably different LoRA) does not.
    expected = renderer.redraw(jobs[1], renderer.redraw(jobs[0], plain.image))
    assert expected.tobytes() == out.image.tobytes()
    swapped = replace(jobs[0], loras=b.loras)
    wrong = np.asarray(renderer.redraw(jobs[1], renderer.redraw(swapped, plain.image)))
    x0, y0, x1, y1 = boxes[0]
    assert np.abs(wrong[y0:y1, x0:x1].astype(int) - after[y0:y1, x0:x1]).mean() > 1.0
    print(f"\ndetail: {seconds - plain.seconds:.2f}s for 2 faces over {plain.seconds:.2f}s (CPU)")


def test_infotext_reads_back_with_adetailer_keys(tiny: TinyModel, renderer: DiffusersRenderer) -> None:
    on = job(tiny, "  detail: {prompt: '[PROMPT], detailed face'}")
    out = render(renderer, on)
    p = parse_infotext(out.infotext)
    a, b = on.detail.targets  # type: ignore[union-attr]
    assert p["ADetailer model"] == p["ADetailer model 2nd"] == "face_detect_v1.4_s"
    assert p["ADetailer prompt"] == a.positive and p["ADetailer prompt 2nd"] == b.positive
    assert "green eyes" in p["ADetailer prompt"] and "<lora:tiny_character_v1:1>" in p["ADetailer prompt"]
    assert "detailed face" in p["ADetailer prompt 2nd"] and "tiny_character" not in p["ADetailer prompt 2nd"]
    assert p["ADetailer confidence"] == "0.3" and p["ADetailer dilate erode"] == "4"
    assert p["ADetailer mask blur"] == "4" and p["ADetailer denoising strength"] == "0.4"
    assert p["ADetailer inpaint only masked"] == "True" and p["ADetailer inpaint padding"] == "32"
    assert p["ADetailer version"].startswith("storyboard-detail")
    assert p["Seed"] == "5" and p["Steps"] == "4"  # the panel's own keys are untouched
    boxes = face_boxes()
    assert p["Detail faces"] == f"a {list(boxes[0])} seed 6; b {list(boxes[1])} seed 7"


def test_detector_identity_enters_the_hash_only_when_on(tiny: TinyModel, renderer: DiffusersRenderer) -> None:
    on, off = job(tiny, "  detail: {}"), job(tiny)
    assert "detector" in renderer.identity(on).payload()
    assert "detector" not in renderer.identity(off).payload()
    assert renderer.identity(on).payload()["detector"]["model"] == "face_detect_v1.4_s"
