"""What a checkpoint file holds: its tensors (safetensors, or pickle through the gate), its model
family from its key names, and the configs that describe it (caller's folder, its own metadata, or
the shipped SD1.5 / SDXL configs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from storyboard.errors import ModelError
from storyboard.models.pickle_gate import load_pickle
from storyboard.models.registry import PICKLE_EXTENSIONS, safetensors_header, safetensors_metadata

ModelKind = Literal["sd1", "sdxl"]

CONFIG_METADATA_KEY = "storyboard_config"

_SDXL_MARKER = "conditioner.embedders.1."
_SD1_MARKER = "cond_stage_model.transformer."
_SDXL_CLIP_L = "conditioner.embedders.0.transformer."
_SD2_MARKER = "cond_stage_model.model."
_VAE_PREFIXES = ("first_stage_model.", "vae.")


def shipped_config_dir(kind: ModelKind) -> Path:
    """The bundled diffusers config folder for real SD1.5 (``sd1``) or SDXL-base (``sdxl``) models."""
    name = "sd15" if kind == "sd1" else "sdxl"
    return Path(str(resources.files("storyboard") / "data" / "configs" / name))


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Tensor]:
    """All tensors of a weights file on CPU; pickle formats only with ``allow_pickle``."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"The model file {p} does not exist.")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
            raise ModelError(f"Cannot read {p}: it is not a valid safetensors file ({exc}).") from exc
    if suffix in PICKLE_EXTENSIONS:
        return _tensors_of(load_pickle(p, allow_pickle=allow_pickle), p)
    raise ModelError(
        f"{p} has an unknown model file type '{suffix}'; expected .safetensors"
        f" (or {', '.join(PICKLE_EXTENSIONS)} with --allow-pickle)."
    )


def _tensors_of(obj: object, path: Path) -> dict[str, Tensor]:
    # Lightning-era checkpoints wrap the weights in {"state_dict": ...}.
    while isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path} does not hold a state dict of tensors.")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def detect_kind(keys: Mapping[str, Any] | set[str], path: Path) -> ModelKind:
    """SD1.x or SDXL from a single-file checkpoint's key names."""
    if any(k.startswith(_SDXL_MARKER) for k in keys):
        return "sdxl"
    if any(k.startswith(_SD1_MARKER) for k in keys):
        return "sd1"
    if any(k.startswith(_SD2_MARKER) for k in keys):
        raise ModelError(f"{path} is a Stable Diffusion 2.x checkpoint; only SD1.x and SDXL are supported.")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelError(
            f"{path} has a UNet but no text encoder this loader knows (not SD1.x or SDXL).",
        )
    raise ModelError(
        f"{path} is not a Stable Diffusion checkpoint: none of its tensors has the expected names.",
        hint="is it a LoRA, VAE or embedding? those go in models/Lora, models/VAE or embeddings/",
    )


_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
INPAINT_CHANNELS = 9  # 4 latent + 1 mask + 4 masked-picture latent (sd-v1-5-inpainting and merges)


def unet_in_channels(raw: Mapping[str, Tensor], path: Path) -> int:
    """The UNet's input channels from its first convolution: 4 for an ordinary model, 9 for an
    inpainting model (WebUI's ``hybrid`` conditioning). Other kinds (instruct-pix2pix's 8, depth's
    5) need conditioning this loader does not build, so they are refused by name."""
    weight = raw.get(_CONV_IN)
    channels = 4 if weight is None or weight.ndim != 4 else int(weight.shape[1])
    if channels not in (4, INPAINT_CHANNELS):
        raise ModelError(
            f"{path} has a UNet with {channels} input channels; storyboard renders ordinary (4) and "
            f"inpainting (9) models only.",
            hint="instruct-pix2pix (8) and depth (5) models are not supported",
        )
    return channels


def file_in_channels(path: Path) -> int | None:
    """The UNet's input channels of a checkpoint without loading it: a .safetensors header's shape,
    or a diffusers folder's unet config; None when it cannot be told (a pickle file)."""
    if path.is_dir():
        cfg = path / "unet" / "config.json"
        return int(_read_json(cfg).get("in_channels", 4)) if cfg.is_file() else None
    if path.suffix.lower() != ".safetensors":
        return None
    entry = safetensors_header(path).get(_CONV_IN)
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return int(shape[1]) if isinstance(shape, list) and len(shape) == 4 else 4


# Configs -----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The model config {path} is missing.") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"The model config {path} cannot be read: {exc}.") from exc
    if not isinstance(data, dict):
        raise ModelError(f"The model config {path} is not a JSON object.")
    return data


def configs_from_dir(folder: Path, kind: ModelKind) -> dict[str, dict[str, Any]]:
    """Component configs of a diffusers-style folder: unet, vae, text_encoder(_2), scheduler."""
    out = {
        "unet": _read_json(folder / "unet" / "config.json"),
        "vae": _read_json(folder / "vae" / "config.json"),
        "text_encoder": _read_json(folder / "text_encoder" / "config.json"),
        "scheduler": _read_json(folder / "scheduler" / "scheduler_config.json"),
    }
    if kind == "sdxl":
        out["text_encoder_2"] = _read_json(folder / "text_encoder_2" / "config.json")
    return out


def configs_for(path: Path, kind: ModelKind, config_dir: Path | None) -> dict[str, dict[str, Any]]:
    if config_dir is not None:
        return configs_from_dir(Path(config_dir), kind)
    if path.suffix.lower() == ".safetensors":
        raw = safetensors_metadata(path).get(CONFIG_METADATA_KEY)
        if raw:
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise ModelError(
                    f"{path} has a broken '{CONFIG_METADATA_KEY}' metadata entry: {exc}."
                ) from exc
            if not isinstance(data, dict) or not {"unet", "vae", "text_encoder", "scheduler"} <= set(data):
                raise ModelError(f"{path} has an incomplete '{CONFIG_METADATA_KEY}' metadata entry.")
            return {str(k): dict(v) for k, v in data.items()}
    return configs_from_dir(shipped_config_dir(kind), kind)
