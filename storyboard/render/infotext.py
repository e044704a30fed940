"""WebUI infotext: the "parameters" text a PNG carries (``modules/processing.create_infotext``).

Three parts, as WebUI writes them::

    <prompt, LoRA tags kept>
    Negative prompt: <negative>            (omitted when the negative prompt is empty)
    Steps: 20, Sampler: DPM++ 2S a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 448x640, ...

The parameter line is ``", ".join(f"{k}: {quote(v)}")`` over the keys in WebUI's fixed order, skipping
None values; ``quote`` JSON-quotes a value containing ``,``, ``:`` or a newline
(``infotext_utils.quote``). :func:`parse_infotext` reads it back the way WebUI's
``parse_generation_parameters`` does, so a PNG written here loads into WebUI's "PNG Info" tab.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storyboard import __version__

if TYPE_CHECKING:
    from storyboard.jobs import PanelJob
    from storyboard.prompt.embeddings import Embedding
    from storyboard.render.resolve import ResolvedJob, Resolver

VERSION = f"storyboard {__version__}"

# WebUI's parse_generation_parameters regex: `key: value` where a value is a JSON string or up to ",".
_PARAM = re.compile(r"\s*(\w[\w \-/]+):\s*(\"(?:\\.|[^\\\"])+\"|[^,]*)(?:,|$)")
_NEGATIVE = "Negative prompt:"


def quote(value: object) -> str:
    """WebUI's ``quote``: JSON-quote text holding ``,``, ``:`` or a newline; else as is."""
    text = format_value(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def format_value(value: object) -> str:
    """Numbers as WebUI's infotexts show them: 7 not 7.0, 0.7 as 0.7."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def hash_list(pairs: Sequence[tuple[str, str]]) -> str | None:
    """``"name: hash, name: hash"`` as WebUI writes Lora/TI hashes; ``:`` and ``,`` dropped from names."""
    if not pairs:
        return None
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {h}" for name, h in pairs)


def parse_hash_list(text: str) -> dict[str, str]:
    """Inverse of :func:`hash_list`."""
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, h = item.strip().rpartition(":")
        if sep:
            out[name.strip()] = h.strip()
    return out


@dataclass(frozen=True)
class Infotext:
    """The generation parameters of one image, in WebUI's terms."""

    prompt: str
    negative: str
    steps: int
    sampler: str  # WebUI label without the schedule suffix, e.g. "DPM++ 2S a"
    schedule_type: str | None  # e.g. "Karras"; None where WebUI writes none (DDIM)
    cfg_scale: float
    seed: int
    width: int
    height: int
    model_hash: str | None = None  # sha256[:10] of the checkpoint
    model: str | None = None  # checkpoint file stem
    vae_hash: str | None = None  # only for an external VAE: sha256[:10]
    vae: str | None = None  # external VAE file name
    denoising_strength: float | None = None
    # WebUI's inpainting_mask_weight, written only for an inpainting (9-channel) model, as "1.0"
    conditional_mask_weight: str | None = None
    clip_skip: int = 1
    rng: str = "GPU"  # WebUI's randn_source: GPU (default), CPU, NV
    hires_sampler: str | None = None
    hires_prompt: str | None = None
    hires_negative: str | None = None
    hires_schedule_type: str | None = None
    hires_upscale: float | None = None
    hires_steps: int | None = None  # only when set (WebUI: hr_second_pass_steps != 0)
    hires_upscaler: str | None = None
    lora_hashes: Sequence[tuple[str, str]] = ()
    ti_hashes: Sequence[tuple[str, str]] = ()
    emphasis: str = "Original"
    extra: Mapping[str, object] = field(default_factory=dict)
    version: str = VERSION

    def params(self) -> dict[str, object | None]:
        """The parameter line's keys in WebUI's order (None = left out)."""
        return {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "Schedule type": self.schedule_type,
            "CFG scale": self.cfg_scale,
            "Seed": self.seed,
            "Size": f"{self.width}x{self.height}",
            "Model hash": self.model_hash,
            "Model": self.model,
            "VAE hash": self.vae_hash,
            "VAE": self.vae,
            "Denoising strength": self.denoising_strength,
            "Conditional mask weight": self.conditional_mask_weight,
            "Clip skip": self.clip_skip if self.clip_skip > 1 else None,
            "RNG": self.rng if self.rng != "GPU" else None,
            # extra_generation_params, in the order WebUI's txt2img init adds them
            "Hires sampler": self.hires_sampler,
            "Hires prompt": self.hires_prompt,
            "Hires negative prompt": self.hires_negative,
            "Hires schedule type": self.hires_schedule_type,
            "Hires upscale": self.hires_upscale,
            "Hires steps": self.hires_steps or None,
            "Hires upscaler": self.hires_upscaler,
            "Lora hashes": hash_list(self.lora_hashes),
            "TI hashes": hash_list(self.ti_hashes),
            "Emphasis": self.emphasis if self.emphasis != "Original" else None,
            **self.extra,
            "Version": self.version,
        }

    def text(self) -> str:
        return make_infotext(self.prompt, self.negative, self.params())


def make_infotext(prompt: str, negative: str, params: Mapping[str, object | None]) -> str:
    """WebUI's create_infotext layout for a prompt, a negative prompt and ordered parameters."""
    line = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    neg = f"\n{_NEGATIVE} {negative}" if negative else ""
    return f"{prompt}{neg}\n{line}".strip()


def parse_infotext(text: str) -> dict[str, str]:
    """WebUI's ``parse_generation_parameters`` (values kept as text): "Prompt", "Negative prompt",
    every ``key: value`` of the last line (JSON-quoted values unquoted) and "Size-1"/"Size-2"."""
    lines = text.strip().split("\n")
    last = lines[-1]
    matches = _PARAM.findall(last)
    if len(matches) < 3:
        # Too few parameters: WebUI treats the last line as part of the prompt.
        last, matches = "", []
    else:
        lines = lines[:-1]
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(_NEGATIVE):
            in_negative = True
            stripped = stripped[len(_NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(stripped)
    out: dict[str, str] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in matches:
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) > 1:
            with contextlib.suppress(ValueError):
                value = str(json.loads(value))
        out[key.strip()] = value
        size = re.fullmatch(r"(\d+)x(\d+)", value)
        if size and key.strip().endswith("Size"):
            out[f"{key.strip()}-1"], out[f"{key.strip()}-2"] = size.group(1), size.group(2)
    return out


__all__ = ["VERSION", "Infotext", "hash_list", "make_infotext", "parse_hash_list", "parse_infotext", "quote"]


def lora_hash_pairs(rj: ResolvedJob, hashes: Resolver) -> list[tuple[str, str]]:
    """(name, hash) per LoRA as WebUI keys them: by the name written in the `<lora:NAME:w>` tag (the
    name its reader looks the hash up by), each name once."""
    pairs: dict[str, str] = {}
    for r in rj.loras:
        pairs.setdefault(r.use.name, hashes.lora_hash(r.file.path))
    return list(pairs.items())


def panel_infotext(rj: ResolvedJob, hashes: Resolver, embeddings: Sequence[Embedding]) -> str:
    """The infotext of one rendered panel, from its resolved job (step 5 of a render)."""
    from storyboard.models.checkpoint_file import INPAINT_CHANNELS, file_in_channels
    from storyboard.render.inpaint_cond import MASK_WEIGHT
    from storyboard.render.regions import regional_infotext
    from storyboard.render.sampling import SCHEDULE_LABELS

    job, s, spec, hr_spec = rj.job, rj.settings, rj.spec, rj.hr_spec
    hr = s.hires
    ckpt, vae = rj.models.checkpoint, rj.models.vae
    inpainting = ckpt.path.exists() and file_in_channels(ckpt.path) == INPAINT_CHANNELS
    own_hr_sampler = hr is not None and hr_spec is not None and bool(hr.sampler)
    # WebUI writes the schedule its get_sigmas resolves: a sampler with a default schedule (DPM++ 2M:
    # Karras) overwrites "Automatic" with it; "Automatic" stays only where none applies (Euler a).
    schedule = spec.schedule_label or SCHEDULE_LABELS[spec.schedule]
    hr_schedule = (
        (hr_spec.schedule_label or SCHEDULE_LABELS[hr_spec.schedule]) if hr_spec is not None else None
    )
    info = Infotext(
        prompt=job.positive,
        negative=job.negative,
        steps=s.steps,
        sampler=spec.infotext_name,
        schedule_type=schedule,
        cfg_scale=float(s.cfg_scale),
        seed=job.seed,
        width=s.width,
        height=s.height,
        model_hash=hashes.sha(ckpt.path)[:10] if ckpt.path.is_file() else None,
        model=ckpt.name,
        vae_hash=hashes.sha(vae.path)[:10] if vae and vae.path.is_file() else None,
        vae=vae.path.name if vae else None,
        denoising_strength=job.img2img.denoising_strength
        if job.img2img is not None
        else (hr.denoising_strength if hr else None),
        conditional_mask_weight=str(MASK_WEIGHT) if inpainting else None,
        clip_skip=s.clip_skip,
        rng="CPU" if s.noise_source == "cpu" else "GPU",
        hires_sampler=hr_spec.infotext_name
        if own_hr_sampler and hr_spec is not None and hr_spec.sampler != spec.sampler
        else None,
        hires_prompt=hr.prompt if hr is not None and hr.prompt and hr.prompt != job.positive else None,
        hires_negative=hr.negative
        if hr is not None and hr.negative and hr.negative != job.negative
        else None,
        hires_schedule_type=hr_schedule if own_hr_sampler and hr_schedule != schedule else None,
        hires_upscale=float(hr.scale) if hr else None,
        hires_steps=hr.steps if hr and hr.steps else None,
        hires_upscaler=hr.upscaler if hr else None,
        lora_hashes=lora_hash_pairs(rj, hashes),
        ti_hashes=[(e.name, e.shorthash) for e in embeddings],
        extra={
            **inpaint_infotext(job),
            **regional_infotext(job),
            **schedule_infotext(rj),
            **_control_infotext(rj),
        },
    )
    return info.text()


def _control_infotext(rj: ResolvedJob) -> dict[str, object]:
    if not rj.job.control:
        return {}
    from storyboard.render.control.files import control_infotext

    return control_infotext(rj.job.control, rj.controls)


def schedule_infotext(rj: ResolvedJob) -> dict[str, object]:
    """ "Noise Schedule" (WebUI's sd_noise_schedule option, which pasting sets) and "CFG Rescale" (the
    key of WebUI's CFG Rescale extension), each only when in use. WebUI writes its option's value, so
    a ztsnr-marked model under the default option says "Default"; this says what was used, which is
    what makes WebUI repeat the picture whatever the model's markers."""
    from storyboard.render.resolve import uses_ztsnr

    out: dict[str, object] = {}
    if uses_ztsnr(rj):
        out["Noise Schedule"] = "Zero Terminal SNR"
    if rj.settings.cfg_rescale > 0:
        out["CFG Rescale"] = rj.settings.cfg_rescale
    return out


def inpaint_infotext(job: PanelJob) -> dict[str, object]:
    """WebUI's inpaint parameters, only where its img2img ``init`` writes them: "Mask blur" (above
    0), "Inpaint area: Only masked" with "Masked area padding", "Masked content" (not for original).
    ("Denoising strength" is a field of its own.)"""
    inpaint = job.inpaint
    if inpaint is None:
        return {}
    out: dict[str, object] = {}
    if inpaint.mask_blur > 0:
        out["Mask blur"] = inpaint.mask_blur
    if inpaint.full_res:
        out["Inpaint area"] = "Only masked"
        out["Masked area padding"] = inpaint.padding
    if inpaint.masked_content != "original":
        out["Masked content"] = inpaint.masked_content
    return out
