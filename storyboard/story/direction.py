"""img2img and inpaint in the story: the panel fields' types, and the jobs the planner makes of them.

The story side (``Inpaint``, ``ResizeMode``, ``MaskedContent``) is what a writer puts in YAML, with
WebUI's names and defaults; the job side (``Img2ImgJob``, ``InpaintJob``) is what reaches the
renderer inside a ``PanelJob`` (re-exported by ``storyboard.jobs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from storyboard.story.base import MAX_SEED, Strict
from storyboard.story.regions import check_box

# WebUI's img2img resize modes, by the names its radio buttons show (images.resize_image 0-2, and 3:
# the init image encoded at its own size and its latent resized).
ResizeMode = Literal["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
# WebUI's "Masked content" choices (inpainting_fill 0-3 are fill, original, latent noise, latent nothing).
MaskedContent = Literal["fill", "original", "latent noise", "latent nothing"]
DEFAULT_DENOISING = 0.75  # WebUI's img2img default


class Inpaint(Strict):
    """Repaint part of the panel (WebUI's img2img inpaint): a mask image or a box says where."""

    mask: Path | None = Field(
        None, description="Mask image beside the story, the size of the picture: white = repaint."
    )
    box: tuple[float, float, float, float] | None = Field(
        None, description="Or a box to repaint: [x0, y0, x1, y1] as fractions of the panel (y down)."
    )
    mask_blur: int = Field(4, ge=0, le=64, description="Mask blur in pixels (WebUI's default 4).")
    masked_content: MaskedContent = Field(
        "original",
        description="What the masked area starts from: fill, original, latent noise, latent nothing.",
    )
    inpaint_full_res: bool = Field(
        False,
        description="'Only masked': render the masked area (plus padding) at the panel's resolution, "
        "then paste it back (WebUI's Inpaint area).",
    )
    padding: int = Field(
        32, ge=0, le=256, description="Only masked padding, in pixels (WebUI's inpaint_full_res_padding)."
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="The inpaint's own seed (the panel's seed keeps drawing the picture under it); "
        "default: the panel's. `storyboard pick` writes this one for an inpaint panel.",
    )

    @field_validator("box")
    @classmethod
    def _inside(cls, v: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if v is None:
            return None
        box = check_box(v)
        if box == (0.0, 0.0, 1.0, 1.0):
            raise ValueError(
                "the box covers the whole panel: repaint all of it with init_image and denoising_strength"
            )
        return box

    @model_validator(mode="after")
    def _one_of(self) -> Inpaint:
        if (self.mask is None) == (self.box is None):
            raise ValueError("give a mask image or a box (one of them) to say what to repaint")
        return self


DENOISING_HELP = "How much of the init image (or inpainted area) is redrawn, 0..1; default 0.75 (WebUI)."
FIX_STEPS_HELP = (
    "WebUI's 'With img2img, do exactly the amount of steps the slider specifies': img2img runs `steps` "
    "steps of a longer schedule instead of steps x denoising strength."
)


@dataclass(frozen=True)
class Img2ImgJob:
    """img2img: the panel is drawn from a picture, WebUI's img2img tab.

    The picture is the panel's input image "init" (a file of the story's, by content), or, for an
    inpaint over the panel's own render (``PanelJob.base``), that render in the output folder's
    store: ``base_render``, its path, filled in by the build. The path never enters a hash; the
    base render's own job hash does (``job_hash``)."""

    denoising_strength: float
    resize_mode: str = "Just resize"
    fix_steps: bool = False  # WebUI's img2img_fix_steps option
    base_render: str | None = None

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"denoising_strength": self.denoising_strength, "resize_mode": self.resize_mode}
        if self.fix_steps:
            out["fix_steps"] = True
        return out


@dataclass(frozen=True)
class InpaintJob:
    """Inpaint: which part of the picture is redrawn and WebUI's settings for it. The mask is the
    panel's input image "mask" (white = repaint), or ``box`` (panel fractions) when it has none."""

    box: tuple[float, float, float, float] | None
    mask_blur: int = 4
    masked_content: str = "original"
    full_res: bool = False  # WebUI's "Inpaint area: Only masked"
    padding: int = 32
    # "Only masked" over a picture of its own size, as WebUI does (the face detailer: the crop is
    # rendered at the job's size and pasted back into the panel's picture); False fits it first.
    keep_picture_size: bool = False

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "box": list(self.box) if self.box is not None else None,
            "mask_blur": self.mask_blur,
            "masked_content": self.masked_content,
            "full_res": self.full_res,
            "padding": self.padding,
        }
        if self.keep_picture_size:
            out["keep_picture_size"] = True
        return out
