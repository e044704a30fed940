"""Map kohya LoRA module names onto the layers of a diffusers UNet and transformers CLIP encoders.

Instead of a hand-written table we enumerate the real model's Linear/Conv2d layers and compute, for
each, every kohya name a trainer could have given it:

- UNet, diffusers layout (kohya's SD1 trainer): ``lora_unet_down_blocks_0_attentions_0_..._to_q``;
- UNet, LDM layout (kohya's SDXL trainer, some SD1 converters): ``lora_unet_input_blocks_1_1_..._to_q``;
- text encoders in the transformers-4 layout ``lora_te_text_model_encoder_layers_0_self_attn_q_proj``
  (``lora_te1_``/``lora_te2_`` for SDXL), whatever path the installed transformers uses.

So the mapping is exact for whatever block layout the model has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from storyboard.models.ldm_keys import unet_key_to_ldm

# Which kohya prefixes name which pipeline component.
COMPONENT_PREFIXES: dict[str, tuple[str, ...]] = {
    "unet": ("lora_unet_",),
    "text_encoder": ("lora_te_", "lora_te1_"),
    "text_encoder_2": ("lora_te2_",),
}

TARGET_TYPES = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Target:
    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    module_name: str  # path inside the component, as named_modules() gives it
    module: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        w = self.module.weight
        assert isinstance(w, torch.Tensor)
        return w


def diffusers_to_ldm_module_path(name: str, layers_per_block: int, up_has_attn: list[bool]) -> str | None:
    """The LDM (original SD) path of a diffusers UNet module path, or None where there is none.

    The mapping itself is the checkpoint writer's (ldm_keys.unet_key_to_ldm), asked about the
    module's weight, so LoRA names and checkpoint keys can never disagree.
    """
    config = {
        "layers_per_block": layers_per_block,
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_has_attn],
    }
    try:
        return unet_key_to_ldm(f"{name}.weight", config).removesuffix(".weight")
    except (KeyError, IndexError):
        return None


def _unet_layout(unet: nn.Module) -> tuple[int, list[bool]]:
    down_blocks = getattr(unet, "down_blocks", None)
    up_blocks = getattr(unet, "up_blocks", None)
    if down_blocks is None or up_blocks is None:
        return 2, []
    lpb = len(down_blocks[0].resnets)
    up_has_attn = [bool(getattr(b, "attentions", None)) for b in up_blocks]
    return lpb, up_has_attn


def _flat(path: str) -> str:
    return path.replace(".", "_")


def unet_kohya_names(name: str, layers_per_block: int, up_has_attn: list[bool]) -> list[str]:
    names = ["lora_unet_" + _flat(name)]
    ldm = diffusers_to_ldm_module_path(name, layers_per_block, up_has_attn)
    if ldm is not None:
        names.append("lora_unet_" + _flat(ldm))
    return names


def text_encoder_kohya_names(name: str, prefixes: tuple[str, ...]) -> list[str]:
    # transformers 5 CLIPTextModel names its layers "encoder.layers.0..." (no "text_model." level);
    # kohya names come from transformers 4 where the path was "text_model.encoder.layers.0...".
    canonical = name if name.startswith("text_model.") or name == "text_projection" else "text_model." + name
    return [p + _flat(canonical) for p in prefixes]


def build_key_map(components: dict[str, nn.Module]) -> dict[str, Target]:
    """kohya module name -> Target, for every Linear/Conv2d layer of the given components."""
    out: dict[str, Target] = {}
    for comp, model in components.items():
        if model is None:
            continue
        if comp == "unet":
            lpb, up_has_attn = _unet_layout(model)
        for name, module in model.named_modules():
            if not isinstance(module, TARGET_TYPES):
                continue
            target = Target(comp, name, module)
            if comp == "unet":
                keys = unet_kohya_names(name, lpb, up_has_attn)
            else:
                keys = text_encoder_kohya_names(name, COMPONENT_PREFIXES.get(comp, ()))
            for k in keys:
                out.setdefault(k, target)
    return out


def kohya_unet_name(diffusers_path: str) -> str:
    """kohya's SD1 name of a diffusers UNet module path."""
    return "lora_unet_" + _flat(diffusers_path)


def kohya_te_name(module_path: str, prefix: str = "lora_te_") -> str:
    """kohya's (transformers-4 layout) name of a CLIP text-encoder module path."""
    return text_encoder_kohya_names(module_path, (prefix,))[0]
