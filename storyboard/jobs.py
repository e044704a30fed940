"""The contracts between the stages: what the planner hands the renderer, what comes back, and what the
output folder's manifest records.

    story/ --PanelJob--> render/ --RenderedPanel--> app/ (store + manifest) --panels--> layout/, check/

Everything here is plain data with no torch and no file access, so every stage (and a test) can build
it by hand. The render stage's own resolved form of a job (files found, sampler parsed) is
``storyboard.render.resolve.ResolvedJob``; it never leaves render/.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from storyboard.errors import StoryboardError
from storyboard.prompt.extra_networks import LoraUse, extract_extra_networks, merge_lora_uses
from storyboard.story.base import MAX_SEED
from storyboard.story.control import BUILTIN_MODULES, ControlUnit
from storyboard.story.detail import DetailJob, DetailTarget
from storyboard.story.direction import Img2ImgJob, InpaintJob
from storyboard.story.regions import Box, format_box, parse_regions, split_ratios
from storyboard.story.schema import HiresFix, RenderSettings

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "HiresFix",
    "DetailJob",
    "DetailTarget",
    "Img2ImgJob",
    "InpaintJob",
    "Box",
    "BUILTIN_MODULES",
    "ControlUnit",
    "InputImage",
    "format_box",
    "parse_regions",
    "split_ratios",
    "MANIFEST_VERSION",
    "MAX_SEED",
    "LoraUse",
    "Manifest",
    "ManifestLora",
    "ManifestRecord",
    "PanelJob",
    "RenderIdentity",
    "RenderSettings",
    "RegionJob",
    "RenderedPanel",
    "Renderer",
]


@dataclass(frozen=True)
class RegionJob:
    """One character's part of a regional panel: where it is, its prompt and its LoRA set.

    ``positive`` is the whole prompt this region is encoded with (the panel composed as if only this
    character were in it, plus the region's own words), LoRA tags kept as WebUI shows them;
    ``loras`` are every use that prompt makes (the character's, the style's, hand-written tags), so
    this region's text encoder and UNet run with exactly ``lora_set``.
    """

    character: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as panel fractions, y down
    positive: str
    loras: tuple[LoraUse, ...]

    @property
    def prompt_text(self) -> str:
        return extract_extra_networks(self.positive)[0]

    @property
    def lora_set(self) -> tuple[LoraUse, ...]:
        return tuple(merge_lora_uses(list(self.loras)))

    def spec(self) -> dict[str, Any]:
        return {
            "character": self.character,
            "box": list(self.box),
            "positive": self.positive,
            "loras": [[u.name, u.te, u.unet] for u in self.lora_set],
        }


@dataclass(frozen=True)
class InputImage:
    """An image the story gives a panel (a control map, an init image, a mask): where it is and what
    it holds. Only the digest enters the pixel spec, so moving the file re-renders nothing and
    editing it re-renders the panels that use it."""

    role: str  # "control 0", "control 1", "init", "mask", ...
    path: str  # absolute, resolved against the story file's folder
    digest: str  # storyboard.input_images.image_digest: the decoded pixels' sha256


@dataclass(frozen=True)
class PanelJob:
    """Everything that decides one panel's pixels, as the planner composed it.

    ``loras`` keeps one entry per use with its owner ("character:<id>", "style", or "prompt" for a tag
    written in a scene or template), so a stage can ask which LoRAs belong to whom; ``lora_set`` is the
    whole-panel set WebUI would patch in (repeated names merged by WebUI's rule).
    """

    panel_id: str
    page: int
    index: int
    positive: str  # as WebUI's infotext shows it: LoRA tags kept
    negative: str
    loras: tuple[LoraUse, ...]
    seed: int
    settings: RenderSettings
    characters: tuple[str, ...] = field(default_factory=tuple)
    scene: str = ""
    # Regional rendering (empty for an ordinary panel): one entry per character, and the shared
    # prompt (the panel composed with no character) with the LoRA uses every region shares.
    regions: tuple[RegionJob, ...] = ()
    shared_positive: str = ""
    shared_loras: tuple[LoraUse, ...] = ()
    # img2img / inpaint (None for a txt2img panel). ``base`` is the job whose render an inpaint
    # starts from when the story gives no init_image: the same panel without its inpaint.
    img2img: Img2ImgJob | None = None
    inpaint: InpaintJob | None = None
    base: PanelJob | None = None
    # Images the story names for this panel (each by content), and its ControlNet units: unit k's
    # image is the input with role "control k".
    inputs: tuple[InputImage, ...] = ()
    control: tuple[ControlUnit, ...] = ()
    # The face detailer (story/detail.py), None when off: run after the panel renders.
    detail: DetailJob | None = None

    def input_image(self, role: str) -> InputImage:
        for i in self.inputs:
            if i.role == role:
                return i
        raise KeyError(f"panel {self.panel_id} has no input image {role!r}")

    def has_input(self, role: str) -> bool:
        return any(i.role == role for i in self.inputs)

    @property
    def prompt_text(self) -> str:
        """The positive prompt as the text encoder sees it: extra-network tags removed."""
        return extract_extra_networks(self.positive)[0]

    @property
    def lora_set(self) -> tuple[LoraUse, ...]:
        """The LoRAs patched into the whole model for this panel (WebUI's merge of repeated names)."""
        return tuple(merge_lora_uses(list(self.loras)))

    def owned_by(self, owner: str) -> tuple[LoraUse, ...]:
        return tuple(u for u in self.loras if u.owner == owner)

    @property
    def shared_lora_set(self) -> tuple[LoraUse, ...]:
        """The set the unconditional prediction and the shared prompt run under in a regional panel."""
        return tuple(merge_lora_uses(list(self.shared_loras)))

    @property
    def size(self) -> tuple[int, int]:
        return self.settings.width, self.settings.height

    @property
    def output_size(self) -> tuple[int, int]:
        return self.settings.output_size

    def pixel_spec(self) -> dict[str, Any]:
        """Everything in the job that changes pixels, as plain JSON-able data (model files by reference).

        Owners are left out on purpose: who asked for a LoRA does not change the merged weights."""
        s = self.settings
        spec: dict[str, Any] = {
            "positive": self.positive,
            "negative": self.negative,
            "loras": [[u.name, u.te, u.unet] for u in self.lora_set],
            "seed": self.seed,
            "model": s.model,
            "vae": s.vae,
            "sampler": s.sampler,
            "schedule": s.schedule,
            "steps": s.steps,
            "cfg_scale": s.cfg_scale,
            "size": [s.width, s.height],
            "clip_skip": s.clip_skip,
            "hires": s.hires.model_dump() if s.hires else None,
            "noise_source": s.noise_source,
        }
        # Speed settings that can change pixels enter only when set, so other panels keep their hash.
        if s.compile != "off":
            spec["compile"] = s.compile
        if s.low_memory:
            spec["low_memory"] = True
        # Only set SDXL-family settings enter the spec, so every other panel keeps its hash.
        for key in ("v_pred", "ztsnr"):
            if getattr(s, key) is not None:
                spec[key] = getattr(s, key)
        if s.cfg_rescale:
            spec["cfg_rescale"] = s.cfg_rescale
        if self.regions:
            # Only regional panels carry these keys, so every other panel keeps its hash (and cache).
            spec["regions"] = [r.spec() for r in self.regions]
            spec["shared"] = {
                "positive": self.shared_positive,
                "loras": [[u.name, u.te, u.unet] for u in self.shared_lora_set],
            }
            spec["regional"] = s.regional.model_dump()
        # img2img and inpaint keys only where set, so txt2img panels keep their hash.
        if self.img2img is not None:
            spec["img2img"] = self.img2img.spec()
        if self.inpaint is not None:
            spec["inpaint"] = self.inpaint.spec()
        if self.base is not None:
            spec["base"] = self.base.pixel_spec()

        # Only panels with input images or ControlNet units carry these keys (other hashes keep).
        if self.inputs:
            spec["inputs"] = [[i.role, i.digest] for i in self.inputs]
        if self.control:
            spec["control"] = [
                u.spec(self.input_image(f"control {k}").digest) for k, u in enumerate(self.control)
            ]
        if self.detail is not None:
            spec["detail"] = self.detail.spec()  # only with the detailer on: other hashes keep
        return spec

    def spec_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.pixel_spec(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RenderIdentity:
    """What besides a job's own settings decides its pixels: the renderer and its files' hashes.

    ``payload()`` is the exact JSON that enters the job hash, so a field added here re-renders every
    cached panel only when it is set."""

    renderer: Literal["draft", "diffusers"]
    version: str
    model: str | None = None
    vae: str | None = None
    lora_hashes: dict[str, str] = field(default_factory=dict)  # WebUI's short hash, by LoRA name
    lora_files: dict[str, str] = field(default_factory=dict)  # sha256 of the file, by LoRA name
    embeddings: dict[str, str] = field(default_factory=dict)
    upscaler: str | None = None
    device: str | None = None
    control_files: dict[str, str] = field(default_factory=dict)  # sha256 of each ControlNet file, by name
    detector: dict[str, str] = field(default_factory=dict)  # the face detailer's detector, when on

    def payload(self) -> dict[str, Any]:
        if self.renderer == "draft":
            return {"renderer": self.version}
        out: dict[str, Any] = {
            "engine": self.version,
            "model": self.model,
            "vae": self.vae,
            "lora_hashes": self.lora_hashes,
            "lora_files": self.lora_files,
            "embeddings": self.embeddings,
            "device": self.device,
        }
        if self.upscaler is not None:
            out["upscaler"] = self.upscaler
        if self.control_files:
            out["control_files"] = self.control_files
        if self.detector:
            out["detector"] = self.detector
        return out


@dataclass(frozen=True)
class RenderedPanel:
    job: PanelJob
    image: Image.Image
    infotext: str
    seconds: float
    notes: tuple[str, ...] = ()  # what a step reports beside the picture (faces left alone)


class Renderer(Protocol):
    """A render stage: checks jobs before anything loads, renders them in any grouping."""

    name: str

    def check(self, jobs: Sequence[PanelJob]) -> None:
        """Raise StoryboardError when a job cannot be rendered (missing file, bad setting)."""
        ...

    def identity(self, job: PanelJob) -> RenderIdentity: ...

    def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
        """Render the jobs, yielding each panel as soon as it is done."""
        ...


def job_hash(job: PanelJob, renderer: Renderer) -> str:
    """The content address of a panel render: its pixel spec plus its renderer's identity."""
    payload: dict[str, Any] = {"spec": job.pixel_spec(), "renderer": renderer.identity(job).payload()}
    if job.base is not None:
        # An inpaint over the panel's own render: that render is known by its own hash.
        payload["base"] = job_hash(job.base, renderer)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# The output folder's manifest ---------------------------------------------------------------------

# 1: first versioned form. Manifests written before versioning (no "version" key) have the same
# fields and read as version 1; a newer version than this is refused with a sentence.
MANIFEST_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ManifestLora(_Record):
    name: str
    te: float
    unet: float
    hash: str | None = None


class ManifestRecord(_Record):
    """One panel's entry: which render the panel file shows and what made it."""

    job_hash: str
    page: int
    index: int
    seed: int
    positive: str
    negative: str
    loras: list[ManifestLora] = Field(default_factory=list)
    size: list[int]
    file: str
    renderer: str
    render_seconds: float | None = None


class Manifest(_Record):
    version: int = MANIFEST_VERSION
    story: str = ""
    source: str = ""
    panels: dict[str, ManifestRecord] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, where: str) -> Manifest:
        """Read a manifest; an unreadable or newer one is a sentence naming the file, not a traceback."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoryboardError(
                f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}).",
                hint="delete it: the next build writes a new one (rendered panels are kept in cache/)",
            ) from None
        if not isinstance(data, dict):
            raise StoryboardError(f"{where} is not a storyboard manifest.", hint="delete it and rebuild")
        version = data.get("version", 1)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise StoryboardError(
                f"{where} was written by a newer storyboard (manifest version {version}; this one reads "
                f"up to {MANIFEST_VERSION}).",
                hint="upgrade storyboard, or build into another --out folder",
            )
        try:
            return cls.model_validate({**data, "version": MANIFEST_VERSION})
        except ValueError as exc:
            raise StoryboardError(
                f"{where} is damaged: {str(exc).splitlines()[0]}.", hint="delete it and rebuild"
            ) from None

    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
