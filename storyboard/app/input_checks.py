"""What an img2img or inpaint panel asks that no render can do, found before anything loads.

The pictures themselves (missing, unreadable, wrong mode, a mask of another size than the picture
it masks) are checked when the story is planned (``story/img2img.py``, by the rules of every input
image). Here, with the masks read: a mask or box that covers nothing or the whole picture, and a
denoising strength of 0 with ``img2img_fix_steps`` (WebUI would run no steps). Each is a sentence at
the story's file:line of the setting.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from storyboard.input_images import load_input_image
from storyboard.jobs import PanelJob
from storyboard.render import inpaint_mask as im
from storyboard.story.load import LoadedStory, position_of

Loc = tuple[str | int, ...]


def _dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def img2img_problems(loaded: LoadedStory, jobs: Sequence[PanelJob]) -> list[str]:
    """Every such problem of the story's img2img and inpaint panels."""
    by_id = {j.panel_id: j for j in jobs}
    out: list[str] = []
    for pi, page in enumerate(loaded.story.pages):
        for ni, panel in enumerate(page.panels):
            job = by_id.get(panel.id or "")
            if job is None or job.img2img is None:
                continue
            problems: list[tuple[Loc, str]] = []
            if job.img2img.fix_steps and job.img2img.denoising_strength <= 0:
                problems.append(
                    (
                        ("denoising_strength",),
                        "with img2img_fix_steps the denoising strength must be above 0 (WebUI runs "
                        "no steps at 0).",
                    )
                )
            if job.inpaint is not None:
                problems += mask_problems(job)
            for field, message in problems:
                loc = ("pages", pi, "panels", ni, *field)
                out.append(f"{position_of(loaded, loc)}: {_dotted(loc)}: {message}")
    return out


def mask_problems(job: PanelJob) -> list[tuple[Loc, str]]:
    """A mask or box that repaints nothing, or everything (that is img2img, not inpaint)."""
    assert job.inpaint is not None
    picture = "the init image" if job.has_input("init") else "the panel's render"
    if job.has_input("mask"):
        field: Loc = ("inpaint", "mask")
        what = "mask"
        mask = im.binary_mask(load_input_image(job.input_image("mask").path, mode="RGBA"))
    else:
        field, what = ("inpaint", "box"), "box"
        assert job.inpaint.box is not None
        mask = im.box_mask(_picture_size(job), job.inpaint.box)
    low, high = mask.getextrema()
    if high == 0:
        return [(field, f"the {what} covers nothing of {picture} (white marks what to repaint).")]
    if low == 255:
        return [
            (
                field,
                f"the {what} covers all of {picture}; to redraw all of it use init_image with "
                "denoising_strength (img2img) instead of inpaint.",
            )
        ]
    return []


def _picture_size(job: PanelJob) -> tuple[int, int]:
    if job.has_input("init"):
        with Image.open(job.input_image("init").path) as img:
            return img.size
    return job.output_size
