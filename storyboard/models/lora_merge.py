"""Bake LoRAs into a base model and save it: a single LDM .safetensors file or a diffusers folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from storyboard.errors import ModelError
from storyboard.models.lora import ApplyReport, LoraPatcher, LoraWarning
from storyboard.models.lora_formats import read_lora

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class LoraSpec:
    """One ``NAME_OR_FILE[:WEIGHT[:UNET_WEIGHT]]`` argument (WebUI's ``<lora:name:te:unet>`` order)."""

    ref: str
    te: float = 1.0
    unet: float = 1.0


def parse_lora_spec(text: str) -> LoraSpec:
    """Split ``name:te[:unet]``; as in WebUI, the UNet weight defaults to the text-encoder weight."""
    parts = text.split(":")
    numbers: list[float] = []
    while len(parts) > 1 and len(numbers) < 2 and _NUMBER.match(parts[-1].strip()):
        numbers.insert(0, float(parts.pop()))
    ref = ":".join(parts).strip()
    if not ref:
        raise ModelError(f"--lora '{text}' names no LoRA; write NAME_OR_FILE[:WEIGHT[:UNET_WEIGHT]].")
    te = numbers[0] if numbers else 1.0
    unet = numbers[1] if len(numbers) > 1 else te
    return LoraSpec(ref, te, unet)


@dataclass
class MergeResult:
    out: Path
    format: str  # "single-file" | "diffusers"
    report: ApplyReport
    loras: list[tuple[Path, float, float]] = field(default_factory=list)


def _source_metadata(path: Path) -> dict[str, str]:
    if path.is_file() and path.suffix.lower() == ".safetensors":
        from storyboard.models.registry import safetensors_metadata

        return dict(safetensors_metadata(path))
    return {}


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def save_single_file(comps: Any, out: Path, metadata: dict[str, str]) -> None:
    """Write the SD1.x components as one LDM-keyed .safetensors (what WebUI and Civitai use)."""
    from storyboard.models.ldm_keys import diffusers_to_ldm_state_dict
    from storyboard.models.stable_save import save_file_stable

    if getattr(comps, "text_encoder_2", None) is not None:
        raise ModelError(
            f"Saving an SDXL model as a single file ({out}) is not supported yet.",
            hint="give --out a folder name (without .safetensors) to save a diffusers folder",
        )
    state = diffusers_to_ldm_state_dict(comps.unet, comps.vae, comps.text_encoder)
    # LDM checkpoints carry their noise schedule; loaders read it from there.
    state["alphas_cumprod"] = comps.alphas_cumprod.detach().to("cpu", torch.float32).contiguous()
    tmp = _atomic_target(out)
    try:
        part = tmp / out.name
        save_file_stable(state, str(part), metadata=metadata)
        os.replace(part, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_diffusers_folder(comps: Any, out: Path) -> None:
    """Write a diffusers model folder (one subfolder per component + model_index.json)."""
    if out.exists() and not (out / "model_index.json").is_file():
        raise ModelError(
            f"{out} exists and is not a diffusers model folder; refusing to overwrite it.",
            hint="choose a new --out path",
        )
    tmp = _atomic_target(out)
    try:
        index: dict[str, Any] = {
            "_class_name": "StableDiffusionXLPipeline"
            if comps.text_encoder_2 is not None
            else "StableDiffusionPipeline",
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        }
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            module = getattr(comps, name, None)
            if module is None:
                continue
            module.save_pretrained(str(tmp / name), safe_serialization=True)
            index[name] = [type(module).__module__.split(".")[0], type(module).__name__]
        for name in ("tokenizer", "tokenizer_2"):
            tok = getattr(comps, name, None)
            if tok is not None:
                tok.save_pretrained(str(tmp / name))
                index[name] = ["transformers", "CLIPTokenizer"]
        sched = tmp / "scheduler"
        sched.mkdir()
        sched_cfg = {"_class_name": "EulerDiscreteScheduler", **dict(comps.scheduler_config)}
        (sched / "scheduler_config.json").write_text(json.dumps(sched_cfg, indent=2), encoding="utf-8")
        index["scheduler"] = ["diffusers", sched_cfg["_class_name"]]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_loras(
    model: str | Path,
    loras: Sequence[tuple[str | Path, float, float]],
    out: str | Path,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
    config_dir: str | Path | None = None,
) -> MergeResult:
    """Load ``model``, merge ``loras`` ((file, te weight, unet weight)...) and save to ``out``.

    ``out`` ending in ``.safetensors`` gives a single LDM-keyed file, anything else a diffusers folder.
    """
    from storyboard.models.load import load_pipeline_components

    model_path = Path(model)
    out_path = Path(out)
    if out_path.resolve() == model_path.resolve():
        raise ModelError(f"--out {out_path} is the input model; write the merged model somewhere else.")
    networks = [(read_lora(p, allow_pickle=allow_pickle), float(te), float(un)) for p, te, un in loras]
    comps = load_pipeline_components(
        model_path, device=device, dtype=dtype, allow_pickle=allow_pickle, config_dir=config_dir
    )
    patcher = LoraPatcher(
        unet=comps.unet,
        text_encoder=comps.text_encoder,
        text_encoder_2=comps.text_encoder_2,
        model_kind=comps.kind,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoraWarning)  # the caller prints report.warnings itself
        report = patcher.apply(networks)
    applied = [(n.path, te, un) for n, te, un in networks]
    if out_path.suffix.lower() == ".safetensors":
        meta = _source_metadata(model_path)
        meta["storyboard_merged_loras"] = json.dumps(
            [{"file": p.name, "te": te, "unet": un} for p, te, un in applied]
        )
        save_single_file(comps, out_path, meta)
        fmt = "single-file"
    else:
        save_diffusers_folder(comps, out_path)
        fmt = "diffusers"
    return MergeResult(out=out_path, format=fmt, report=report, loras=applied)
