"""Which model family a checkpoint or LoRA belongs to, read from its header without loading tensors.

Two levels, decided in this order:

1. the architecture (``sd1``, ``sd2``, ``sdxl``) from tensor names, as WebUI's ``sd_models`` decides
   it (``conditioner.embedders.1`` = SDXL, ``cond_stage_model.model`` = SD2's OpenCLIP,
   ``cond_stage_model.transformer`` = SD1's CLIP). Weights never lie about this, so it alone decides
   whether a LoRA fits a model (``models.lora.check_compatible``).
2. the SDXL family (``pony``, ``illustrious``, ``noobai``) from metadata (modelspec, kohya's
   ``ss_sd_model_name``), then the file name. Nothing in the weights tells these apart (they are all
   SDXL fine-tunes), so this is a label for people and presets, never a reason to refuse a file.

The ``v_pred`` and ``ztsnr`` markers are empty tensors that NoobAI-style checkpoints carry; WebUI and
Forge switch to v-prediction and to the zero-terminal-SNR schedule when they are present.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from storyboard.models.registry import safetensors_header

ARCH_LABEL = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
FAMILY_LABEL = {"pony": "Pony", "illustrious": "Illustrious", "noobai": "NoobAI"}

# NoobAI is trained from Illustrious and often says so in its name: test it first.
_FAMILY_PATTERNS = (
    ("noobai", re.compile(r"noob", re.I)),
    ("illustrious", re.compile(r"illustrious|(?:^|[^a-z])ilxl|(?:^|[^a-z])ill?xl", re.I)),
    ("pony", re.compile(r"pony", re.I)),
)
# Metadata keys that name the checkpoint itself (modelspec) or a LoRA's training base (kohya).
_CHECKPOINT_META = ("modelspec.title", "modelspec.architecture", "modelspec.description", "modelspec.tags")
_LORA_META = ("ss_sd_model_name", "ss_base_model_version", "modelspec.architecture")


@dataclass(frozen=True)
class ModelFamily:
    """What a model file is, as far as its header says."""

    architecture: str | None  # "sd1" | "sd2" | "sdxl" | None (not a Stable Diffusion file)
    family: str | None = None  # "pony" | "illustrious" | "noobai" | None
    family_source: str | None = None  # where the family came from: the metadata key, or "file name"
    v_pred: bool = False
    ztsnr: bool = False

    @property
    def label(self) -> str:
        """E.g. ``SDXL (NoobAI, v-pred, ztsnr)``."""
        arch = ARCH_LABEL.get(self.architecture or "", "unknown")
        extras = [FAMILY_LABEL[self.family]] if self.family else []
        extras += [m for m, on in (("v-pred", self.v_pred), ("ztsnr", self.ztsnr)) if on]
        return f"{arch} ({', '.join(extras)})" if extras else arch


def architecture_from_keys(keys: Iterable[str]) -> str | None:
    """``sd1`` / ``sd2`` / ``sdxl`` from single-file tensor names, None for anything else.

    >>> architecture_from_keys(["conditioner.embedders.1.model.ln_final.weight"])
    'sdxl'
    >>> architecture_from_keys(["cond_stage_model.model.transformer.resblocks.0.ln_1.weight"])
    'sd2'
    >>> architecture_from_keys(["cond_stage_model.transformer.embeddings.position_ids"])
    'sd1'
    """
    arch = None
    for k in keys:
        if k.startswith("conditioner.embedders.1."):
            return "sdxl"
        if k.startswith("cond_stage_model.model."):
            arch = "sd2"
        elif k.startswith("cond_stage_model.transformer.") and arch is None:
            arch = "sd1"
    return arch


def family_from_text(texts: Iterable[tuple[str, str]]) -> tuple[str | None, str | None]:
    """(family, source) from the first (source, text) pair naming one of the SDXL families.

    >>> family_from_text([("modelspec.title", "NoobAI-XL (based on Illustrious)")])
    ('noobai', 'modelspec.title')
    >>> family_from_text([("file name", "ponyDiffusionV6XL_v6StartWithThisOne")])
    ('pony', 'file name')
    >>> family_from_text([("file name", "animagine-xl-3.1")])
    (None, None)
    """
    for source, text in texts:
        for family, pattern in _FAMILY_PATTERNS:
            if text and pattern.search(text):
                return family, source
    return None, None


def family_of_metadata(
    arch: str | None, meta: Mapping[str, str], name: str, keys: Iterable[str] = ("modelspec.title",)
) -> tuple[str | None, str | None]:
    """The SDXL family from the given metadata keys, then the file name; None for other architectures."""
    if arch != "sdxl":
        return None, None
    return family_from_text([*((k, meta.get(k, "")) for k in keys), ("file name", name)])


def checkpoint_family(path: str | Path) -> ModelFamily:
    """A checkpoint's architecture, SDXL family and markers from its safetensors header.

    A diffusers folder gives its architecture from its layout; its scheduler config says v-prediction.
    A pickle file is not opened (that would run its code): its architecture is unknown.
    """
    p = Path(path)
    if p.is_dir():
        arch: str | None = "sdxl" if (p / "text_encoder_2").is_dir() else "sd1"
        v_pred = False
        sched = p / "scheduler" / "scheduler_config.json"
        if sched.is_file():
            v_pred = '"v_prediction"' in sched.read_text(encoding="utf-8")
        fam, src = family_of_metadata(arch, {}, p.name)
        return ModelFamily(arch, fam, src, v_pred=v_pred)
    if p.suffix.lower() != ".safetensors":
        return ModelFamily(None)
    header = safetensors_header(p)
    raw_meta = header.get("__metadata__") or {}
    meta = {str(k): str(v) for k, v in raw_meta.items()} if isinstance(raw_meta, dict) else {}
    keys = [k for k in header if k != "__metadata__"]
    arch = architecture_from_keys(keys)
    fam, src = family_of_metadata(arch, meta, p.stem, _CHECKPOINT_META)
    return ModelFamily(arch, fam, src, v_pred="v_pred" in header, ztsnr="ztsnr" in header)


def lora_family(arch: str | None, meta: Mapping[str, str], name: str) -> ModelFamily:
    """A LoRA's family: its architecture (from ``detect_lora_base``) and the SDXL family it was trained
    on, from kohya's ``ss_sd_model_name`` / ``ss_base_model_version``, then the file name."""
    fam, src = family_of_metadata(arch, meta, name, _LORA_META)
    return ModelFamily(arch, fam, src)


def trigger_words(meta: Mapping[str, str], top_tags: Iterable[tuple[str, int]] = ()) -> list[str]:
    """A LoRA's trigger words: modelspec's trigger phrase when given, else its most frequent tag."""
    phrase = meta.get("modelspec.trigger_phrase", "").strip()
    if phrase:
        return [w.strip() for w in phrase.split(",") if w.strip()]
    tags = [t for t, _ in top_tags]
    return tags[:1]


__all__ = [
    "ARCH_LABEL",
    "FAMILY_LABEL",
    "ModelFamily",
    "architecture_from_keys",
    "checkpoint_family",
    "family_from_text",
    "lora_family",
    "trigger_words",
]
