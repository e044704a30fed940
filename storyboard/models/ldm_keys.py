"""Diffusers -> original LDM (CompVis) key names for SD1.x, so a model can be saved as one file.

WebUI, ComfyUI and Civitai all exchange SD1.x checkpoints as a single file with the original
``model.diffusion_model.* / first_stage_model.* / cond_stage_model.transformer.*`` names. The
loader reads such files with diffusers' own LDM -> diffusers conversion; this module is its inverse
(the round trip is tested), written from the block layout rather than a fixed table so it also fits
small test models with fewer blocks or layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."

_RESNET_UNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_ATTN = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)


def _layers_per_block(config: Mapping[str, Any]) -> int:
    lpb = config["layers_per_block"]
    if isinstance(lpb, (list, tuple)):
        if len(set(lpb)) != 1:
            raise ValueError("per-block layers_per_block has no single LDM layout")
        lpb = lpb[0]
    return int(lpb)


def _resnet_unet(rest: str) -> str:
    name, _, tail = rest.partition(".")
    for new, old in _RESNET_UNET:
        if name == new:
            return f"{old}.{tail}"
    raise KeyError(rest)


def unet_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """One diffusers UNet2DConditionModel key as its LDM name (without the model prefix)."""
    per = _layers_per_block(config) + 1  # LDM input/output slots per resolution level
    top = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        # SDXL's size/crop conditioning embedding
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    module, _, param = key.rpartition(".")
    if module in top:
        return f"{top[module]}.{param}"
    parts = key.split(".")
    if parts[0] == "down_blocks":
        i = int(parts[1])
        if parts[2] == "resnets":
            return f"input_blocks.{1 + i * per + int(parts[3])}.0.{_resnet_unet('.'.join(parts[4:]))}"
        if parts[2] == "attentions":
            return f"input_blocks.{1 + i * per + int(parts[3])}.1.{'.'.join(parts[4:])}"
        if parts[2] == "downsamplers":
            return f"input_blocks.{(i + 1) * per}.0.op.{'.'.join(parts[5:])}"
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{_resnet_unet('.'.join(parts[3:]))}"
        if parts[1] == "attentions":
            return f"middle_block.1.{'.'.join(parts[3:])}"
    if parts[0] == "up_blocks":
        i = int(parts[1])
        if parts[2] == "resnets":
            return f"output_blocks.{i * per + int(parts[3])}.0.{_resnet_unet('.'.join(parts[4:]))}"
        if parts[2] == "attentions":
            return f"output_blocks.{i * per + int(parts[3])}.1.{'.'.join(parts[4:])}"
        if parts[2] == "upsamplers":
            has_attn = "CrossAttn" in config["up_block_types"][i]
            slot = 2 if has_attn else 1
            return f"output_blocks.{i * per + per - 1}.{slot}.conv.{'.'.join(parts[5:])}"
    raise KeyError(f"no LDM name for UNet key {key}")


def vae_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """One diffusers AutoencoderKL key as its LDM name (without the model prefix)."""
    n_up = len(config["up_block_types"])
    parts = key.split(".")
    side = parts[0]
    if side in ("quant_conv", "post_quant_conv"):
        return key
    if parts[1] in ("conv_in", "conv_out"):
        return key
    if parts[1] == "conv_norm_out":
        return f"{side}.norm_out.{parts[2]}"
    tail = ".".join(parts[4:])
    if parts[1] == "down_blocks":
        if parts[3] == "resnets":
            return f"{side}.down.{parts[2]}.block.{parts[4]}.{'.'.join(parts[5:])}".replace(
                "conv_shortcut", "nin_shortcut"
            )
        if parts[3] == "downsamplers":
            return f"{side}.down.{parts[2]}.downsample.{'.'.join(parts[5:])}"
    if parts[1] == "up_blocks":
        level = n_up - 1 - int(parts[2])
        if parts[3] == "resnets":
            return f"{side}.up.{level}.block.{parts[4]}.{'.'.join(parts[5:])}".replace(
                "conv_shortcut", "nin_shortcut"
            )
        if parts[3] == "upsamplers":
            return f"{side}.up.{level}.upsample.{'.'.join(parts[5:])}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            return f"{side}.mid.block_{int(parts[3]) + 1}.{tail}".replace("conv_shortcut", "nin_shortcut")
        if parts[2] == "attentions":
            rest = ".".join(parts[4:])
            for new, old in _VAE_ATTN:
                if rest.startswith(new + "."):
                    return f"{side}.mid.attn_1.{old}.{rest[len(new) + 1 :]}"
    raise KeyError(f"no LDM name for VAE key {key}")


def vae_to_ldm_state_dict(vae: Any, *, prefix: str = "") -> dict[str, Tensor]:
    """An AutoencoderKL's weights in LDM names; ``prefix=""`` is the layout of standalone VAE files."""
    out: dict[str, Tensor] = {}
    for key, t in vae.state_dict().items():
        name = vae_key_to_ldm(key, vae.config)
        if ".mid.attn_1." in name and name.endswith(".weight") and t.ndim == 2:
            # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
            t = t[:, :, None, None]
        out[prefix + name] = t
    return out


def text_encoder_key_to_ldm(key: str) -> str:
    """A transformers CLIPTextModel key as its LDM name (with prefix)."""
    # transformers >= 5.6 flattened CLIPTextModel (no ``text_model.``); older versions nest it.
    return CLIP_PREFIX + key.removeprefix("text_model.")


def diffusers_to_ldm_state_dict(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Tensor]:
    """Original LDM/CompVis state dict of an SD1.x model given as diffusers/transformers modules.

    Tensors are contiguous CPU copies (as safetensors wants); dtypes are kept.
    """
    out: dict[str, Tensor] = {}
    for key, t in unet.state_dict().items():
        out[UNET_PREFIX + unet_key_to_ldm(key, unet.config)] = t
    out.update(vae_to_ldm_state_dict(vae, prefix=VAE_PREFIX))
    for key, t in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue  # a buffer, not a weight; WebUI ignores it either way
        out[text_encoder_key_to_ldm(key)] = t
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


_OPEN_CLIP_LAYER = (
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)


def open_clip_state_dict(text_encoder_2: Any) -> dict[str, Tensor]:
    """SDXL's second text encoder (CLIPTextModelWithProjection) in OpenCLIP names, without prefix.

    OpenCLIP fuses q/k/v into ``in_proj_*`` and stores ``text_projection`` as (hidden, proj), the
    transpose of the transformers Linear weight.
    """
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder_2.state_dict().items()}
    out: dict[str, Tensor] = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T,
    }
    n_layers = int(text_encoder_2.config.num_hidden_layers)
    for i in range(n_layers):
        src = f"encoder.layers.{i}."
        dst = f"transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{p}"] = torch.cat(
                [sd[f"{src}self_attn.{x}_proj.{p}"] for x in ("q", "k", "v")], dim=0
            )
            for new, old in _OPEN_CLIP_LAYER:
                out[f"{dst}{old}.{p}"] = sd[f"{src}{new}.{p}"]
    return out


def sdxl_to_ldm_state_dict(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> dict[str, Tensor]:
    """Original SGM (SDXL) single-file state dict of an SDXL model given as diffusers modules."""
    out: dict[str, Tensor] = {}
    for key, t in unet.state_dict().items():
        out[UNET_PREFIX + unet_key_to_ldm(key, unet.config)] = t
    out.update(vae_to_ldm_state_dict(vae, prefix=VAE_PREFIX))
    for key, t in text_encoder.state_dict().items():
        if not key.endswith("position_ids"):
            out[SDXL_CLIP_L_PREFIX + key.removeprefix("text_model.")] = t
    for key, t in open_clip_state_dict(text_encoder_2).items():
        out[SDXL_CLIP_G_PREFIX + key] = t
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}
