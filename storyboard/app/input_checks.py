"""The pictures img2img and inpaint panels name, checked before anything loads (`validate`, `build`).

Each problem is one sentence at the story's file:line:column of the setting: an init image or mask
that is missing, unreadable or of a mode no renderer reads, a mask of another size than the picture
it masks, a mask or box that covers nothing or the whole picture, and a denoising strength of 0
with ``img2img_fix_steps`` (WebUI would then run no steps at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from storyboard.jobs import PanelJob
from storyboard.render import inpaint_mask as im
from storyboard.story.load import LoadedStory, position_of

# Modes WebUI's img2img takes as they are (flattened to RGB, or a mask read by grey level or alpha).
READABLE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")

Loc = tuple[str | int, ...]


def _dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def _open(path: Path, what: str) -> tuple[Image.Image | None, str | None]:
    """The picture, fully read, or the sentence saying why it cannot be used."""
    if not path.is_file():
        return None, f"the {what} {path} does not exist."
    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return None, f"the {what} {path} is not a picture that can be read ({exc})."
    if img.mode not in READABLE_MODES:
        return None, (
            f"the {what} {path} is a {img.mode} picture; save it as RGB, RGBA or greyscale (L) PNG."
        )
    return img, None


def img2img_problems(loaded: LoadedStory, jobs: Sequence[PanelJob]) -> list[str]:
    """Every problem with the img2img / inpaint pictures of the story's panels."""
    by_id = {j.panel_id: j for j in jobs}
    out: list[str] = []
    for pi, page in enumerate(loaded.story.pages):
        for ni, panel in enumerate(page.panels):
            job = by_id.get(panel.id or "")
            if job is None or job.img2img is None:
                continue
            here: Loc = ("pages", pi, "panels", ni)

            def problem(field: Loc, message: str, here: Loc = here) -> None:
                loc = here + field
                out.append(f"{position_of(loaded, loc)}: {_dotted(loc)}: {message}")

            size: tuple[int, int] | None = job.base.output_size if job.base is not None else None
            if panel.init_image is not None and job.img2img.init_image is not None:
                img, err = _open(Path(job.img2img.init_image), "init image")
                if err:
                    problem(("init_image",), err)
                size = img.size if img is not None else None
            if job.img2img.fix_steps and job.img2img.denoising_strength <= 0:
                problem(
                    ("denoising_strength",),
                    "with img2img_fix_steps the denoising strength must be above 0 (WebUI runs no "
                    "steps at 0).",
                )
            if job.inpaint is not None and size is not None:
                for field, message in _mask_problems(job, size):
                    problem(field, message)
    return out


def _mask_problems(job: PanelJob, size: tuple[int, int]) -> list[tuple[Loc, str]]:
    inpaint = job.inpaint
    assert inpaint is not None
    picture = "the init image" if job.base is None else "the panel's render"
    if inpaint.mask is not None:
        field: Loc = ("inpaint", "mask")
        img, err = _open(Path(inpaint.mask), "mask")
        if img is None:
            return [(field, err or "")]
        if img.size != size:
            return [
                (
                    field,
                    f"the mask {inpaint.mask} is {img.width}x{img.height} but {picture} it masks is "
                    f"{size[0]}x{size[1]}; draw the mask at the picture's size.",
                )
            ]
        mask = im.binary_mask(img.convert("RGBA"))  # as the renderer reads it (render/img2img.py)
    else:
        field = ("inpaint", "box")
        assert inpaint.box is not None
        mask = im.box_mask(size, inpaint.box)
    low, high = mask.getextrema()
    what = "mask" if inpaint.mask is not None else "box"
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
