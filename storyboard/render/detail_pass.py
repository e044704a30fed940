"""The face detailer run on a rendered panel, and what its infotext says (ADetailer's keys).

Each character whose face was re-drawn is written as one ADetailer unit ("tab"): the first unit's
keys are plain ("ADetailer model", "ADetailer prompt", ...), the next ones carry ADetailer's ordinal
suffix ("ADetailer prompt 2nd", " 3rd", ...), so each character's own face prompt reads back with
WebUI's infotext reader; "ADetailer version" closes them, once. "Detail faces" (storyboard's own)
lists every box with the character it was given to and its seed, or "nobody".
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import NamedTuple, Protocol

from PIL import Image

from storyboard.jobs import DetailJob, PanelJob, RenderedPanel
from storyboard.render.detail import Box, DetailDone, Face, FaceFinder, run_detail
from storyboard.render.infotext import parse_infotext, quote

# Which version of storyboard's detailer wrote the keys (ADetailer writes its own release here).
DETAIL_VERSION = "storyboard-detail 1"


class Redrawer(Protocol):
    def redraw(self, job: PanelJob, picture: Image.Image) -> Image.Image: ...

    def redraw_batch(self, jobs: list[PanelJob], picture: Image.Image) -> list[Image.Image]: ...

    def face_batch_size(self, job: PanelJob, faces: int) -> int: ...


def ordinal_suffix(n: int) -> str:
    """ADetailer's key suffix of unit n (0-based): "", " 2nd", " 3rd", " 4th", ...

    >>> [ordinal_suffix(n) for n in range(5)] + [ordinal_suffix(10)]
    ['', ' 2nd', ' 3rd', ' 4th', ' 5th', ' 11th']
    """
    if n == 0:
        return ""
    k = n + 1
    tail = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f" {k}{tail}"


def adetailer_params(detail: DetailJob, model: str, done: DetailDone) -> dict[str, object]:
    """ADetailer's infotext keys, one unit per character re-drawn, in the panel's character order."""
    s = detail.settings
    drawn = {f.character for f, _ in done.faces}
    out: dict[str, object] = {}
    for n, target in enumerate(t for t in detail.targets if t.character in drawn):
        sfx = ordinal_suffix(n)
        unit: dict[str, object] = {
            "ADetailer model": model,
            "ADetailer prompt": target.positive,
            "ADetailer confidence": s.confidence,
            "ADetailer dilate erode": s.dilate_erode,
            "ADetailer mask blur": s.mask_blur,
            "ADetailer denoising strength": s.denoising_strength,
            "ADetailer inpaint only masked": s.inpaint_only_masked,
        }
        if s.inpaint_only_masked:
            unit["ADetailer inpaint padding"] = s.inpaint_only_masked_padding
        if s.use_inpaint_width_height:
            unit["ADetailer use inpaint width height"] = True
            unit["ADetailer inpaint width height"] = f"{s.inpaint_width}x{s.inpaint_height}"
        if s.use_steps:
            unit["ADetailer use separate steps"] = True
            unit["ADetailer steps"] = s.steps
        if s.use_sampler:
            unit["ADetailer use separate sampler"] = True
            unit["ADetailer sampler"] = s.sampler
        out.update({k + sfx: v for k, v in unit.items()})
    if out:
        out["ADetailer version"] = DETAIL_VERSION
    if done.faces or done.left:
        # storyboard's own key (WebUI ignores it): each box, whose it was, and the seed it got.
        faces = [f"{f.character} {list(f.box)} seed {fj.seed}" for f, fj in done.faces]
        out["Detail faces"] = "; ".join(faces + [f"nobody {list(f.box)}" for f in done.left])
    return out


class FaceLine(NamedTuple):
    """One box of "Detail faces": whose it was (None: nobody), where, and the seed it got."""

    character: str | None
    box: Box
    seed: int | None


_FACE = re.compile(r"(\S+) \[(\d+), (\d+), (\d+), (\d+)\](?: seed (\d+))?")


def detail_faces(infotext: str) -> list[FaceLine]:
    """The boxes a panel's infotext lists under "Detail faces" (read with the WebUI-format reader);
    [] when the detailer did not run.

    >>> faces = {"Detail faces": "a [1, 2, 3, 4] seed 6; nobody [5, 6, 7, 8]"}
    >>> detail_faces(with_params("x\\nSteps: 4, Seed: 5, Size: 8x8", faces))  # doctest: +NORMALIZE_WHITESPACE
    [FaceLine(character='a', box=(1, 2, 3, 4), seed=6), FaceLine(character=None, box=(5, 6, 7, 8), seed=None)]
    """
    value = parse_infotext(infotext).get("Detail faces", "")
    out = []
    for part in filter(None, (p.strip() for p in value.split(";"))):
        m = _FACE.fullmatch(part)
        if m is None:
            continue  # not written by this detailer: nothing to show for it
        who, seed = m.group(1), m.group(6)
        box = (int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
        out.append(
            FaceLine(None if who == "nobody" and seed is None else who, box, int(seed) if seed else None)
        )
    return out


def with_params(infotext: str, params: dict[str, object]) -> str:
    """The infotext with `params` appended to its parameter line (its last line), WebUI-quoted."""
    if not params:
        return infotext
    return infotext + ", " + ", ".join(f"{k}: {quote(v)}" for k, v in params.items())


def left_alone(panel_id: str, faces: tuple[Face, ...]) -> tuple[str, ...]:
    return tuple(
        f"panel {panel_id}: a detection at {list(f.box)} (score {f.score:.2f}) matches no character "
        "of the panel; left as rendered"
        for f in faces
    )


def detail_panel(renderer: Redrawer, panel: RenderedPanel, finder: FaceFinder) -> RenderedPanel:
    """Detect, assign and re-draw the panel's faces; the infotext gains ADetailer's keys."""
    job = panel.job
    assert job.detail is not None
    faces = finder.find(panel.image, job)
    done = run_detail(
        job, panel.image, faces, renderer.redraw, renderer.redraw_batch, renderer.face_batch_size
    )
    model = finder.identity(job).get("model", job.detail.settings.model)
    info = with_params(panel.infotext, adetailer_params(job.detail, model, done))
    image = done.image
    image.info.update(panel.image.info)
    return replace(
        panel, image=image, infotext=info, notes=(*panel.notes, *left_alone(job.panel_id, done.left))
    )
