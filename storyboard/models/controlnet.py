"""ControlNet files: their layout and model family read from the header, and loading them offline.

Two layouts are read:

- **original** (lllyasviel's ControlNet 1.0/1.1 files, what the WebUI extension ships and reads):
  LDM names under ``control_model.`` (``input_hint_block.N``, ``input_blocks.N``, ``zero_convs.N.0``,
  ``middle_block``, ``middle_block_out.0``), as ``.safetensors`` or ``.pth`` (through the pickle gate);
- **diffusers**: a folder with ``config.json`` and ``diffusion_pytorch_model.safetensors``, or one
  ``.safetensors`` file with diffusers names (``controlnet_cond_embedding.*``, ``controlnet_down_blocks.*``),
  as most SDXL ControlNets are published.

A single file carries no config: a ControlNet is a trainable copy of its UNet's encoder, so its
architecture is the checkpoint's UNet config (itself from the shipped configs) with the hint
encoder's channels read off the file. Original names go through diffusers' own LDM converter; SDXL's
``label_emb`` is mapped here. :func:`controlnet_to_original` is the inverse (for test files).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from storyboard.errors import ModelError
from storyboard.models.ldm_keys import unet_key_to_ldm
from storyboard.models.pickle_gate import load_pickle, refuse_pickle
from storyboard.models.registry import safetensors_header

PREFIX = "control_model."
ORIGINAL_MARKERS = ("input_hint_block.0.weight", "zero_convs.0.0.weight", "middle_block_out.0.weight")
DIFFUSERS_MARKERS = ("controlnet_cond_embedding.conv_in.weight", "controlnet_down_blocks.0.weight")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
Layout = Literal["original", "diffusers"]


@dataclass(frozen=True)
class ControlNetInfo:
    path: Path
    layout: Layout
    kind: Literal["sd1", "sdxl"]


def _weights_file(path: Path) -> Path:
    return path / WEIGHTS_NAME if path.is_dir() else path


def _shapes(path: Path, *, allow_pickle: bool) -> dict[str, list[int]]:
    """Tensor names and shapes: the safetensors header alone, or the whole pickle (gated)."""
    f = _weights_file(path)
    if not f.is_file():
        raise ModelError(f"The ControlNet folder {path} has no {WEIGHTS_NAME}.")
    if f.suffix.lower() == ".safetensors":
        header = safetensors_header(f)
        return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    refuse_pickle(f, allow_pickle=allow_pickle, what="ControlNet")
    state = _pickle_state(f)
    return {k: list(v.shape) for k, v in state.items()}


def _pickle_state(f: Path) -> dict[str, Tensor]:
    obj = load_pickle(f, allow_pickle=True, what="ControlNet")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"The ControlNet {f} holds no state dict.")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def inspect_controlnet(path: Path, *, allow_pickle: bool) -> ControlNetInfo:
    """Layout and family of a ControlNet file (header only for safetensors); a file that is not a
    ControlNet in a layout read here is a sentence saying what it looks like instead."""
    shapes = _shapes(path, allow_pickle=allow_pickle)
    names = set(shapes)
    bare = {k.removeprefix(PREFIX) for k in names}
    if all(m in bare for m in ORIGINAL_MARKERS):
        sdxl = "label_emb.0.0.weight" in bare
        return ControlNetInfo(path, "original", "sdxl" if sdxl else "sd1")
    if all(m in names for m in DIFFUSERS_MARKERS):
        sdxl = "add_embedding.linear_1.weight" in names
        return ControlNetInfo(path, "diffusers", "sdxl" if sdxl else "sd1")
    raise ModelError(
        f"{path} is not a ControlNet file this reads: {_looks_like(names)}.",
        hint="use a ControlNet 1.0/1.1 file (control_model.* keys, e.g. control_v11p_sd15_openpose) or a "
        "diffusers ControlNet (controlnet_cond_embedding.* keys)",
    )


def _looks_like(names: set[str]) -> str:
    if any("lora_up" in k or "lora_down" in k or ".lora_A" in k or "hada_" in k for k in names):
        return "it holds LoRA weights"
    if any(k.startswith("model.diffusion_model.") for k in names):
        return "it is a whole Stable Diffusion checkpoint (model.diffusion_model.* keys)"
    if any(k.startswith(("adapter.", "body.")) for k in names):
        return "it looks like a T2I-Adapter, which is not supported"
    if any("lora" in k for k in names):
        return "it looks like a Control-LoRA, which is not supported"
    sample = ", ".join(sorted(names)[:3]) or "no tensors"
    return f"it has no input_hint_block / controlnet_cond_embedding tensors (first keys: {sample})"


def check_family(info: ControlNetInfo, checkpoint_kind: str | None) -> None:
    """Refuse a ControlNet trained for another model family than the checkpoint (None: unknown)."""
    if checkpoint_kind is None or info.kind == checkpoint_kind:
        return
    names = {"sd1": "SD 1.x", "sdxl": "SDXL"}
    raise ModelError(
        f"The ControlNet {info.path.name} is for {names[info.kind]} models, but the checkpoint is "
        f"{names.get(checkpoint_kind, checkpoint_kind)}.",
        hint=f"use a {names.get(checkpoint_kind, checkpoint_kind)} ControlNet with this checkpoint",
    )


def controlnet_config(unet_config: Mapping[str, Any], hint_channels: tuple[int, ...]) -> dict[str, Any]:
    """The ControlNetModel config of a copy of this UNet's encoder with this hint encoder."""
    from diffusers import ControlNetModel

    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    cfg = {k: v for k, v in dict(unet_config).items() if k in accepted}
    cfg["conditioning_embedding_out_channels"] = tuple(hint_channels)
    return cfg


def _hint_channels(state: Mapping[str, Any], *, original: bool) -> tuple[int, ...]:
    """The hint encoder's widths: the output channels of its first conv and of each stride-2 block."""

    def out(name: str) -> int:
        return int(state[name].shape[0]) if hasattr(state[name], "shape") else int(state[name][0])

    if original:
        return tuple(
            out(f"input_hint_block.{i}.weight")
            for i in (0, 4, 8, 12)
            if f"input_hint_block.{i}.weight" in state
        )
    blocks = sorted(
        {int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")}
    )
    return (
        out("controlnet_cond_embedding.conv_in.weight"),
        *(out(f"controlnet_cond_embedding.blocks.{b}.weight") for b in blocks[1::2]),
    )


def _read_state(path: Path, *, allow_pickle: bool) -> dict[str, Tensor]:
    f = _weights_file(path)
    if f.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(f))
    refuse_pickle(f, allow_pickle=allow_pickle, what="ControlNet")
    return _pickle_state(f)


def original_to_diffusers(state: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """Original (LDM) ControlNet tensors under diffusers names, by diffusers' converter; SDXL's
    size/crop embedding (label_emb) too, which that converter leaves out."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    bare = {k.removeprefix(PREFIX): v for k, v in state.items()}
    out: dict[str, Tensor] = convert_controlnet_checkpoint(bare, dict(config))
    for new, old in (
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
    ):
        for p in ("weight", "bias"):
            if f"{old}.{p}" in bare:
                out[f"{new}.{p}"] = bare[f"{old}.{p}"]
    return {k: v for k, v in out.items() if v is not None}


def load_controlnet(path: Path, unet_config: Mapping[str, Any], *, allow_pickle: bool) -> Any:
    """A diffusers ControlNetModel (CPU, the file's values) from any layout read here."""
    from diffusers import ControlNetModel

    info = inspect_controlnet(path, allow_pickle=allow_pickle)
    if path.is_dir():
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        state = _read_state(path, allow_pickle=allow_pickle)
    else:
        raw = _read_state(path, allow_pickle=allow_pickle)
        original = info.layout == "original"
        bare = {k.removeprefix(PREFIX): v for k, v in raw.items()} if original else raw
        cfg = controlnet_config(unet_config, _hint_channels(bare, original=original))
        state = original_to_diffusers(bare, cfg) if original else raw
    model = ControlNetModel.from_config(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or wrong:
        what = f"missing {', '.join(missing[:3])}" if missing else f"{wrong[0]} has another shape"
        raise ModelError(
            f"The ControlNet {path} does not fit the checkpoint's UNet ({what}).",
            hint="use a ControlNet made for this model family and size",
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return model.eval().requires_grad_(False)


def controlnet_key_to_original(key: str, config: Mapping[str, Any]) -> str:
    """One diffusers ControlNetModel key under its original name (without the prefix)."""
    module, _, param = key.rpartition(".")
    fixed = {
        "controlnet_cond_embedding.conv_in": "input_hint_block.0",
        "controlnet_mid_block": "middle_block_out.0",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
    }
    if module in fixed:
        return f"{fixed[module]}.{param}"
    parts = module.split(".")
    if module == "controlnet_cond_embedding.conv_out":
        # The hint encoder's output conv follows conv_in and its blocks, each with a SiLU between.
        n = len(config["conditioning_embedding_out_channels"])
        return f"input_hint_block.{2 * (2 * n - 1)}.{param}"
    if parts[0] == "controlnet_cond_embedding" and parts[1] == "blocks":
        return f"input_hint_block.{2 * (int(parts[2]) + 1)}.{param}"
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{param}"
    return unet_key_to_ldm(key, config)


def controlnet_to_original(model: Any, *, prefix: str = PREFIX) -> dict[str, Tensor]:
    """A ControlNetModel's tensors under the original file's names (as lllyasviel's files have them)."""
    cfg = dict(model.config)
    return {
        prefix + controlnet_key_to_original(k, cfg): v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
    }


def short_hash(path: Path) -> str:
    """The hash the ControlNet extension shows after a model's name ("name [abcd1234]"): WebUI's old
    model hash of the weights file."""
    from storyboard.models.hashes import model_hash_v1

    return model_hash_v1(_weights_file(path))


__all__ = [
    "ControlNetInfo",
    "check_family",
    "controlnet_config",
    "controlnet_to_original",
    "inspect_controlnet",
    "load_controlnet",
    "short_hash",
]
