"""The face detailer in the story: ADetailer's settings (``detail:``) and the jobs the planner makes.

``render.detail`` (the story's default; a panel's ``render: {detail: ...}`` overrides field by field)
re-draws each detected face or figure after the panel renders, as WebUI's ADetailer extension does,
but per character: each face is inpainted with its own character's prompt and LoRA set only.
Setting names and defaults are ADetailer's (its ``ad_*`` arguments, without the prefix);
``Character.detail`` adds words for that character's faces, or leaves them alone. Off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from storyboard.prompt.extra_networks import LoraUse
from storyboard.story.base import MAX_SEED, Strict

# ADetailer's model names, by what storyboard detects with (pinned ONNX exports, check/detail_models.py).
DetectorName = Literal["anime face", "person"]


class Detail(Strict):
    """ADetailer's settings (``ad_model``, ``ad_confidence``, ...: the same names without ``ad_``)."""

    enabled: bool = Field(True, description="ADetailer's ad_tab_enable: false turns the pass off here.")
    model: DetectorName = Field(
        "anime face", description="What to detect and re-draw: 'anime face' or 'person' (ad_model)."
    )
    confidence: float = Field(0.3, ge=0.0, le=1.0, description="Detection confidence threshold.")
    dilate_erode: int = Field(
        4, ge=-128, le=128, description="Grow (+) or shrink (-) each detected box's mask, pixels."
    )
    mask_blur: int = Field(4, ge=0, le=64, description="Inpaint mask blur, pixels.")
    denoising_strength: float = Field(0.4, ge=0.0, le=1.0, description="Inpaint denoising strength.")
    inpaint_only_masked: bool = Field(True, description="Inpaint the padded box only (WebUI's Only masked).")
    inpaint_only_masked_padding: int = Field(32, ge=0, le=256, description="Only masked padding, pixels.")
    use_inpaint_width_height: bool = Field(
        False, description="Inpaint at inpaint_width x inpaint_height instead of the panel's size."
    )
    inpaint_width: int = Field(512, ge=64, le=2048, multiple_of=8)
    inpaint_height: int = Field(512, ge=64, le=2048, multiple_of=8)
    use_steps: bool = Field(False, description="Use `steps` instead of the panel's.")
    steps: int = Field(28, ge=1, le=150)
    use_sampler: bool = Field(False, description="Use `sampler` instead of the panel's.")
    sampler: str = Field("DPM++ 2M Karras", description="WebUI sampler name for the pass.")
    prompt: str = Field(
        "",
        description="The face prompt; empty = each character's own panel prompt; [PROMPT] in it "
        "stands for that prompt (ADetailer's ad_prompt).",
    )
    seeds: dict[str, Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=dict,
        description="A face's own seed, by character id (the review page's 'Re-draw face' writes it): "
        "that character's face is re-drawn at it instead of the panel's seed + 1 + its index.",
    )


class CharacterDetail(Strict):
    """What a character adds to the detailer."""

    prompt: str = Field("", description="Words added to this character's face prompt.")
    enabled: bool = Field(True, description="false: this character's faces are left as rendered.")


@dataclass(frozen=True)
class DetailTarget:
    """One character the pass may give a detection to: its face prompt and LoRA uses (its own and
    the style's, never another character's), and where it was asked to be (regional panels)."""

    character: str
    positive: str  # LoRA tags kept, as the infotext shows it
    loras: tuple[LoraUse, ...]
    region: tuple[float, float, float, float] | None = None

    def spec(self) -> dict[str, Any]:
        return {
            "character": self.character,
            "positive": self.positive,
            "loras": [[u.name, u.te, u.unet] for u in self.loras],
            "region": list(self.region) if self.region is not None else None,
        }


@dataclass(frozen=True)
class DetailJob:
    """The pass of one panel: the settings and the panel's characters, in the panel's order."""

    settings: Detail
    targets: tuple[DetailTarget, ...]

    def spec(self) -> dict[str, Any]:
        # No `seeds` unless given: panels detailed before the key existed keep their job hash.
        settings = self.settings.model_dump(exclude={"seeds"} if not self.settings.seeds else None)
        return {"settings": settings, "targets": [t.spec() for t in self.targets]}


def face_prompt(settings: Detail, composed: str, extra: str) -> str:
    """A character's face prompt: ADetailer's ad_prompt ([PROMPT] = the character's own panel
    prompt; empty = that prompt), then the character's detail words.

    >>> face_prompt(Detail(), "1girl, iku", "green eyes")
    '1girl, iku, green eyes'
    >>> face_prompt(Detail(prompt="[PROMPT], detailed face"), "iku", "")
    'iku, detailed face'
    """
    text = settings.prompt.replace("[PROMPT]", composed) if settings.prompt.strip() else composed
    return ", ".join(p for p in (text, extra.strip()) if p)
