"""Draft renderer: a labelled placeholder per panel, so a script can be laid out with no GPU or models."""

from __future__ import annotations

import hashlib
import textwrap
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from storyboard.jobs import PanelJob, RenderedPanel, RenderIdentity

_FONT_CANDIDATES = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
]


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    for path in _FONT_CANDIDATES:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    font = ImageFont.load_default(size=size)
    assert isinstance(font, ImageFont.FreeTypeFont), "Pillow was built without FreeType"
    return font


def _tint(panel_id: str) -> tuple[int, int, int]:
    """A pale colour per panel id, so neighbouring drafts are told apart at a glance."""
    h = hashlib.sha256(panel_id.encode()).digest()
    return tuple(200 + b % 48 for b in h[:3])  # type: ignore[return-value]


def draw_draft(job: PanelJob) -> Image.Image:
    w, h = job.output_size
    img = Image.new("RGB", (w, h), _tint(job.panel_id))
    if job.has_input("init"):
        # A panel drawn from a rough shows the rough, faded, fitted as its resize mode fits it.
        from storyboard.input_images import load_input_image
        from storyboard.render.inpaint_mask import RESIZE_MODES, resize_image

        mode = RESIZE_MODES.index(job.img2img.resize_mode) if job.img2img else 0
        rough = resize_image(min(mode, 2), load_input_image(job.input_image("init").path), w, h)
        img = Image.blend(img, rough, 0.5)
    d = ImageDraw.Draw(img)
    border = max(2, w // 200)
    d.rectangle([0, 0, w - 1, h - 1], outline=(60, 60, 60), width=border)
    d.line([(0, 0), (w, h)], fill=(170, 170, 170), width=1)
    d.line([(0, h), (w, 0)], fill=(170, 170, 170), width=1)
    # Labels sit in a narrow column centred on the default crop focus (x 0.5, y 0.4), so they stay
    # visible when the layout crops the panel to a wide or tall frame.
    big = _font(max(12, w // 12))
    small = _font(max(10, w // 32))
    col_w = w * 0.5
    chars_per_line = max(10, int(col_w / (small.size * 0.55)))
    lines: list[tuple[str, ImageFont.FreeTypeFont]] = [(job.panel_id, big)]
    lines.append((f"DRAFT {w}x{h}", small))
    lines.append((f"seed {job.seed}", small))
    if job.characters:
        lines += [
            (t, small) for t in textwrap.wrap("characters: " + ", ".join(job.characters), chars_per_line)
        ]
    lines += [(t, small) for t in textwrap.wrap("scene: " + job.scene, chars_per_line)]
    heights = [int(f.size * 1.3) for _, f in lines]
    y = int(h * 0.4 - sum(heights) / 2)
    for (text, font), lh in zip(lines, heights, strict=True):
        tw = d.textlength(text, font=font)
        d.text(((w - tw) / 2, y), text, fill=(20, 20, 20), font=font)
        y += lh
    return img


class DraftRenderer:
    """The Renderer for placeholders: no GPU, no models, the panel's final size and crop focus."""

    name = "draft"
    version = "draft-2"  # bump whenever draw_draft changes its pixels

    def check(self, jobs: Sequence[PanelJob]) -> None:
        return None

    def identity(self, job: PanelJob) -> RenderIdentity:
        return RenderIdentity(renderer="draft", version=self.version)

    def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
        for job in jobs:
            t0 = time.perf_counter()
            img = draw_draft(job)
            info = f"{job.positive}\nNegative prompt: {job.negative}\nstoryboard draft, Seed: {job.seed}"
            yield RenderedPanel(job, img, info, time.perf_counter() - t0)
