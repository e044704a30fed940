"""The story file: pydantic models for what a writer puts in YAML.

Everything here is data; loading and error reporting live in story_load.py. Field names follow the
words WebUI users already know (sampler, steps, cfg_scale, clip_skip, hires fix, denoising strength).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from storyboard.layout.types import LayoutSettings
from storyboard.prompt.extra_networks import LoraUse
from storyboard.story.base import MAX_SEED, Strict
from storyboard.story.control import ControlUnit
from storyboard.story.detail import CharacterDetail, Detail
from storyboard.story.direction import DENOISING_HELP, FIX_STEPS_HELP, Inpaint, ResizeMode
from storyboard.story.presets import PresetName, with_preset
from storyboard.story.region_fields import RegionalSettings, RegionsField, _regions_schema

PANEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHARACTER_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
# Beyond this a LoRA's weights overflow fp16 and the panel renders black; the loader warns from 3 on.
MAX_LORA_WEIGHT = 20.0


class LoraSpec(Strict):
    """A LoRA with its strength, as `<lora:name:weight>` or `<lora:name:te:unet>` would give it."""

    lora: str = Field(description="LoRA file path or name (file stem or ss_output_name) in the LoRA folders.")
    weight: float = Field(
        1.0, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT, allow_inf_nan=False,
        description="Multiplier for text encoder and UNet alike.",
    )  # fmt: skip
    te_weight: float | None = Field(
        None, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT, allow_inf_nan=False,
        description="Text-encoder multiplier; defaults to weight.",
    )  # fmt: skip
    unet_weight: float | None = Field(
        None, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT, allow_inf_nan=False,
        description="UNet multiplier; defaults to te_weight/weight.",
    )  # fmt: skip

    @field_validator("lora")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a LoRA file or name, e.g. Iku_Nakatani-000016_v1.0")
        if any(c in v for c in "<>:") and not Path(v).suffix:
            raise ValueError("a LoRA name cannot contain '<', '>' or ':'; give the name or the file path")
        return v.strip()

    @property
    def te(self) -> float:
        return self.weight if self.te_weight is None else self.te_weight

    @property
    def unet(self) -> float:
        # WebUI: unet defaults to the te multiplier (extra_networks_lora.activate).
        return self.te if self.unet_weight is None else self.unet_weight

    @property
    def tag_name(self) -> str:
        """The name that goes into the `<lora:...>` tag: a path's stem, else the name itself."""
        p = Path(self.lora)
        return p.stem if p.suffix in {".safetensors", ".pt", ".ckpt"} or "/" in self.lora else self.lora

    def use(self, owner: str) -> LoraUse:
        """This LoRA as a use owned by `owner` ("character:<id>" or "style"), looked up by `lora`."""
        ref = self.lora if self.lora != self.tag_name else None
        return LoraUse(self.tag_name, self.te, self.unet, owner=owner, ref=ref)

    @property
    def tag(self) -> str:
        return self.use("").tag()


class CheckSettings(Strict):
    """`storyboard check` settings, for the story or one character. Both backends' distances are ~0 for
    the same character (CCIP publishes 0.178; CLIP's 1 - cosine is 1 only for unrelated pictures), so a
    threshold that means anything lies strictly between 0 and 1."""

    threshold: float | None = Field(
        None, gt=0.0, lt=1.0, allow_inf_nan=False, description="Distance above which a crop is off-model "
        "(CCIP's is 0.178; the README says how to calibrate). A character's wins over the story's.",
    )  # fmt: skip


class Character(LoraSpec):
    """A character bound to a LoRA, with the words that call it up."""

    name: str | None = Field(None, description="Display name used for dialogue; defaults to the id.")
    triggers: list[str] = Field(default_factory=list, description="Trigger words of the LoRA.")
    prompt: str = Field("", description="Extra description always added with the character.")
    negative: str = Field("", description="Added to the negative prompt of panels with this character.")
    references: list[Path] = Field(default_factory=list, description="Reference images of the character.")
    check: CheckSettings = Field(default_factory=lambda: CheckSettings(), description="Its check settings.")
    detail: CharacterDetail = Field(default_factory=CharacterDetail, description="Face detailer words.")


class Style(Strict):
    loras: list[LoraSpec] = Field(default_factory=list)
    prompt: str = Field("", description="Added to every positive prompt.")
    negative: str = Field("", description="Added to every negative prompt.")


UPSCALERS_HINT = (
    "Latent, Latent (antialiased), Latent (bicubic), Latent (nearest-exact), Lanczos, or an ESRGAN-family "
    "file in models/ESRGAN (e.g. R-ESRGAN 4x+ Anime6B)"
)


class HiresFix(Strict):
    scale: float = Field(2.0, gt=1.0, le=4.0, description="Hires upscale factor (WebUI 'Upscale by').")
    upscaler: str = Field("Latent", description=f"Hires upscaler: {UPSCALERS_HINT}.")
    denoising_strength: float = Field(0.7, ge=0.0, le=1.0)
    steps: int = Field(0, ge=0, le=150, description="Hires steps; 0 = same as the first pass (WebUI).")
    sampler: str | None = Field(None, description="Hires sampler; defaults to the first pass's.")
    prompt: str | None = Field(None, description="Hires prompt; defaults to the panel's prompt.")
    negative: str | None = None


class ModelFolderSettings(Strict):
    checkpoints: list[Path] = Field(default_factory=list)
    loras: list[Path] = Field(default_factory=list)
    vaes: list[Path] = Field(default_factory=list)
    embeddings: list[Path] = Field(default_factory=list)
    upscalers: list[Path] = Field(default_factory=list)


class RenderSettings(Strict):
    """Generation settings, spelled as WebUI spells them."""

    model: str = Field("AnythingV5", description="Checkpoint path or name in the checkpoints folders.")
    vae: str | None = Field(None, description="External VAE path or name; none = the checkpoint's own.")
    sampler: str = Field("DPM++ 2M Karras", description="WebUI sampler name, e.g. 'DPM++ 2S a Karras'.")
    schedule: str = Field("Automatic", description="Schedule type: Automatic, Karras, Exponential, Uniform.")
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=1.0, le=30.0)
    width: int = Field(512, ge=64, le=2048, multiple_of=8)
    height: int = Field(512, ge=64, le=2048, multiple_of=8)
    clip_skip: int = Field(1, ge=1, le=12, description="WebUI numbering: 1 = last layer, 2 = penultimate.")
    hires: HiresFix | None = Field(None, description="Hires fix; omit to render at width x height only.")
    quality: str = Field("", description="Quality tags put first in every prompt.")
    negative: str = Field("", description="Negative prompt for every panel.")
    template: str = Field("default", description="Prompt template name in templates/prompts/.")
    noise_source: Literal["cpu", "gpu"] = Field(
        "gpu",
        description="Where initial noise is drawn: 'gpu' as WebUI's default, 'cpu' for any-device seeds.",
    )
    webui_root: Path | None = Field(
        None, description="A WebUI install: its models/ and embeddings/ are used."
    )
    folders: ModelFolderSettings = Field(default_factory=ModelFolderSettings)
    allow_pickle: bool = Field(False, description="Allow .ckpt/.pt weights (pickle can run code).")
    regional: RegionalSettings = Field(
        default_factory=lambda: RegionalSettings(), description="How panels with regions render."
    )
    compile: Literal["off", "cuda-graphs", "inductor"] = Field(
        "off",
        description=(
            "Speed option, CUDA: 'cuda-graphs' replays a captured UNet call per shape (helps the small "
            "first pass at small batches); 'inductor' runs torch.compile on the UNet (minutes of "
            "compiling). Pixels match 'off' within float noise, not byte for byte. See docs/speed.md."
        ),
    )
    low_memory: bool = Field(
        False,
        description=(
            "Lower peak memory: one image per batch, CFG halves in two UNet calls, tiled VAE decode "
            "(tiling changes pixels slightly). Slower. See docs/speed.md."
        ),
    )
    preset: PresetName | None = Field(
        None,
        description="Model-family preset (illustrious, noobai, pony, sd15-anime): fills quality and "
        "negative tags, clip skip, width and height wherever they are not set.",
    )
    v_pred: bool | None = Field(
        None,
        description="Force v-prediction on (true) or off (false); default: the checkpoint's marker.",
    )
    ztsnr: bool | None = Field(
        None,
        description="Force the zero-terminal-SNR noise schedule on or off; default: the checkpoint's "
        "ztsnr marker (WebUI's 'Noise Schedule: Zero Terminal SNR').",
    )
    img2img_fix_steps: bool = Field(False, description=FIX_STEPS_HELP)
    cfg_rescale: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="CFG rescale (WebUI's CFG Rescale extension): 0 = off, ~0.7 for v-pred.",
    )
    detail: Detail | None = Field(None, description="Re-draw each character's face after (ADetailer).")
    control: list[ControlUnit] = Field(
        default_factory=list, description="ControlNet units of every panel (a panel's own `control:` wins)."
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return with_preset(data)

    @property
    def output_size(self) -> tuple[int, int]:
        if self.hires is None:
            return self.width, self.height
        # As WebUI: the hires target is int(size * scale), and the latent (so the image) is that
        # rounded down to a multiple of 8 (render/hires.py hires_size does the same).
        scale = self.hires.scale
        return int(self.width * scale) // 8 * 8, int(self.height * scale) // 8 * 8


class DialogueLine(Strict):
    speaker: str | None = Field(None, description="Character id (or any name); none for narration.")
    text: str
    kind: Literal["speech", "thought", "sfx"] = "speech"
    speaker_at: tuple[float, float] | None = Field(
        None, description="Where the speaker is, as [x, y] fractions of the panel (tail points there)."
    )
    vertical: bool | None = Field(
        None, description="Vertical (tategaki) lettering for this line; default: layout.vertical."
    )

    @field_validator("speaker_at")
    @classmethod
    def _in_panel(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not all(0.0 <= c <= 1.0 for c in v):
            raise ValueError("must be two fractions between 0 and 1, e.g. [0.3, 0.4]")
        return v


class Panel(Strict):
    id: str | None = Field(None, description="Stable panel id; default 'p<page>.<n>'.")
    scene: str = Field(description="What happens in the panel, in prompt words.")
    characters: list[str] = Field(default_factory=list, description="Ids of the characters present.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Fixed seed; default derived from the id.")
    caption: str | None = None
    dialogue: list[DialogueLine] = Field(default_factory=list)
    negative: str = Field("", description="Added to this panel's negative prompt.")
    focus: tuple[float, float] = Field((0.5, 0.4), description="Crop focus point [x, y] in the image.")
    render: dict[str, Any] = Field(default_factory=dict, description="Overrides of any render setting.")
    control: list[ControlUnit] | None = Field(
        None, description="ControlNet units (pose, sketch, depth...); [] = none; default: render.control."
    )
    regions: RegionsField = Field(
        None,
        json_schema_extra=_regions_schema,
        description="Where each character is: 'none', a split ('columns 1,1', 'rows 2,1'), or a list of "
        "regions; default for two or more characters: equal columns in the order listed.",
    )
    # img2img and inpaint (story/direction.py)
    init_image: Path | None = Field(None, description="img2img: draw the panel from this picture.")
    denoising_strength: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description=DENOISING_HELP
    )
    resize_mode: ResizeMode = Field("Just resize", description="How the init image fits the panel (WebUI's).")
    inpaint: Inpaint | None = Field(None, description="Repaint part of the panel through a mask or a box.")

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str | None) -> str | None:
        if v is not None and not PANEL_ID_RE.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-' (it becomes a file name), e.g. p1.3")
        return v


class Page(Strict):
    layout: str | None = Field(None, description="Layout template name; default chosen from the panels.")
    panels: list[Panel] = Field(min_length=1)


class Story(Strict):
    title: str = Field(min_length=1, max_length=500)
    author: str | None = None
    language: str = Field("en", description="ISO code of the lettering language (en, zh, ja, ko...).")
    summary: str | None = None
    seed_base: str | None = Field(None, description="Seeds derive from this and panel ids; default: title.")
    characters: dict[str, Character] = Field(default_factory=dict)
    style: Style = Field(default_factory=lambda: Style())
    render: RenderSettings = Field(default_factory=lambda: RenderSettings())
    layout: LayoutSettings = Field(default_factory=LayoutSettings)
    check: CheckSettings = Field(default_factory=lambda: CheckSettings(), description="storyboard check.")
    pages: list[Page] = Field(min_length=1)

    @field_validator("characters")
    @classmethod
    def _character_ids(cls, v: dict[str, Character]) -> dict[str, Character]:
        for key in v:
            if not CHARACTER_ID_RE.match(key):
                raise ValueError(f"character id {key!r}: use letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _assign_ids(self) -> Story:
        # Ids are assigned here so every later stage sees one; uniqueness and character references are
        # checked by the loader, which knows file positions.
        for pi, page in enumerate(self.pages, start=1):
            for ni, panel in enumerate(page.panels, start=1):
                if panel.id is None:
                    panel.id = f"p{pi}.{ni}"
        return self

    def panels(self) -> list[tuple[int, int, Panel]]:
        """Every panel with its 1-based page and panel numbers, in reading order."""
        return [(pi, ni, p) for pi, page in enumerate(self.pages, 1) for ni, p in enumerate(page.panels, 1)]

    def panel(self, panel_id: str) -> Panel:
        for _, _, p in self.panels():
            if p.id == panel_id:
                return p
        ids = [p.id or "" for _, _, p in self.panels()]
        from difflib import get_close_matches

        close = get_close_matches(panel_id, ids, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else f" Panels: {', '.join(ids)}."
        from storyboard.errors import StoryboardError

        raise StoryboardError(f"No panel {panel_id!r} in the story.{hint}")
