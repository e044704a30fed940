"""Tiny random-weight SDXL models in the real single-file layouts, for tests and the SDXL demo offline.

``write_tiny_sdxl_model(out_dir)`` writes a WebUI-style install::

    models/Stable-diffusion/tiny-sdxl.safetensors        SGM keys, modelspec title naming Illustrious
    models/Stable-diffusion/tiny-sdxl-vpred.safetensors  same layout plus the v_pred and ztsnr markers
    models/VAE/tiny-sdxl-vae-fp16-fix.safetensors        a second VAE (stands in for madebyollin's fix)
    models/Lora/tiny-xl-character.safetensors            kohya: lora_unet_ (LDM), lora_te1_, lora_te2_
    models/Lora/tiny-xl-style.safetensors                LyCORIS LoHa on both text encoders and the UNet

Each single file carries its diffusers configs in its metadata (the shipped SDXL configs describe the
real sizes, not these toy ones). ``write_tiny_sd2_checkpoint`` writes an SD2-layout file (OpenCLIP text
encoder under ``cond_stage_model.model.``) that only family detection reads: SD2 is not rendered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from storyboard.models.checkpoint_file import CONFIG_METADATA_KEY
from storyboard.models.stable_save import save_file_stable
from storyboard.models.tiny import HIDDEN, SCHEDULER_CONFIG, TEXT_CONFIG, VAE_CONFIG, _random_vae

SDXL_TIME_DIM = 8
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2),
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "cross_attention_dim": 2 * HIDDEN,  # CLIP-L and CLIP-G hidden states concatenated
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": SDXL_TIME_DIM,
    # pooled CLIP-G embedding + 6 size/crop numbers, each embedded to SDXL_TIME_DIM
    "projection_class_embeddings_input_dim": HIDDEN + 6 * SDXL_TIME_DIM,
    "norm_num_groups": 32,
}
# SDXL's VAE has SD's architecture with its own latent scale.
SDXL_VAE_CONFIG: dict[str, Any] = dict(VAE_CONFIG, scaling_factor=0.13025)


@dataclass(frozen=True)
class TinySdxl:
    checkpoint: Path
    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any


def _jittered(*modules: Any) -> None:
    # Default inits leave many tensors at exactly 0 or 1, which would hide key-mapping mistakes.
    for module in modules:
        for p in module.parameters():
            p.data.add_(torch.randn_like(p) * 0.02)
        module.eval().requires_grad_(False)


def _sdxl_modules(seed: int) -> tuple[Any, Any, Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet: Any = UNet2DConditionModel(**SDXL_UNET_CONFIG)
        vae: Any = AutoencoderKL(**SDXL_VAE_CONFIG)
        te: Any = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        te2: Any = CLIPTextModelWithProjection(CLIPTextConfig(**dict(TEXT_CONFIG, hidden_act="gelu")))
        _jittered(unet, vae, te, te2)
    return unet, vae, te, te2


def write_tiny_sdxl_checkpoint(
    path: str | Path,
    seed: int = 0,
    *,
    v_pred: bool = False,
    ztsnr: bool = False,
    metadata: dict[str, str] | None = None,
) -> TinySdxl:
    """A tiny random-weight SDXL model as an SGM single file (config in metadata), plus its modules.

    ``v_pred`` / ``ztsnr`` add the empty marker tensors NoobAI's v-prediction files carry.
    """
    from diffusers import EulerDiscreteScheduler

    from storyboard.models.ldm_keys import sdxl_to_ldm_state_dict

    unet, vae, te, te2 = _sdxl_modules(seed)
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    configs = {
        "unet": json.loads(unet.to_json_string()),
        "vae": json.loads(vae.to_json_string()),
        "text_encoder": te.config.to_dict(),
        "text_encoder_2": te2.config.to_dict(),
        "scheduler": json.loads(scheduler.to_json_string()),
    }
    state = sdxl_to_ldm_state_dict(unet, vae, te, te2)
    for marker, on in (("v_pred", v_pred), ("ztsnr", ztsnr)):
        if on:
            state[marker] = torch.tensor([])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {CONFIG_METADATA_KEY: json.dumps(configs, sort_keys=True), **(metadata or {})}
    save_file_stable(state, str(out), metadata=meta)
    return TinySdxl(checkpoint=out, unet=unet, vae=vae, text_encoder=te, text_encoder_2=te2)


def write_tiny_sd2_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """A tiny file in SD2's single-file layout (UNet, VAE, OpenCLIP text encoder) for detection tests."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from storyboard.models.ldm_keys import (
        UNET_PREFIX,
        VAE_PREFIX,
        open_clip_state_dict,
        unet_key_to_ldm,
        vae_to_ldm_state_dict,
    )
    from storyboard.models.tiny import UNET_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet: Any = UNet2DConditionModel(**dict(UNET_CONFIG, use_linear_projection=True))
        te: Any = CLIPTextModelWithProjection(CLIPTextConfig(**dict(TEXT_CONFIG, hidden_act="gelu")))
        _jittered(unet, te)
    state = {UNET_PREFIX + unet_key_to_ldm(k, unet.config): t for k, t in unet.state_dict().items()}
    state.update(vae_to_ldm_state_dict(_random_vae(seed + 1), prefix=VAE_PREFIX))
    state.update({"cond_stage_model.model." + k: t for k, t in open_clip_state_dict(te).items()})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file_stable({k: v.contiguous() for k, v in state.items()}, str(out))
    return out


@dataclass(frozen=True)
class TinySdxlModel:
    """Paths of everything write_tiny_sdxl_model wrote."""

    root: Path  # use as `render.webui_root`
    checkpoint: Path
    vpred_checkpoint: Path
    vae: Path
    loras: list[Path] = field(default_factory=list)


def write_tiny_sdxl_model(out_dir: str | Path, seed: int = 0) -> TinySdxlModel:
    """Write the tiny SDXL install under out_dir (same seed, same tensors)."""
    from storyboard.models.ldm_keys import vae_to_ldm_state_dict
    from storyboard.models.lora_write import write_kohya_lora

    root = Path(out_dir)
    ckpt_dir = root / "models" / "Stable-diffusion"
    xl = write_tiny_sdxl_checkpoint(
        ckpt_dir / "tiny-sdxl.safetensors",
        seed,
        metadata={
            "modelspec.title": "Tiny Illustrious XL",
            "modelspec.architecture": "stable-diffusion-xl-v1-base",
        },
    )
    vpred = write_tiny_sdxl_checkpoint(
        ckpt_dir / "tiny-sdxl-vpred.safetensors",
        seed,
        v_pred=True,
        ztsnr=True,
        metadata={"modelspec.title": "Tiny NoobAI XL V-Pred"},
    ).checkpoint
    vae_dir = root / "models" / "VAE"
    vae_dir.mkdir(parents=True, exist_ok=True)
    vae = vae_dir / "tiny-sdxl-vae-fp16-fix.safetensors"
    other = _random_vae(seed + 1)
    save_file_stable({k: v.contiguous() for k, v in vae_to_ldm_state_dict(other).items()}, str(vae))
    lora_dir = root / "models" / "Lora"
    character = write_kohya_lora(
        lora_dir / "tiny-xl-character.safetensors",
        xl.unet,
        xl.text_encoder,
        text_encoder_2=xl.text_encoder_2,
        text_encoder_prefix="lora_te1",
        unet_layout="ldm",
        seed=seed + 20,
        base_model_version="sdxl_base_v1-0",
        metadata={"ss_sd_model_name": "illustriousXL_v01.safetensors", "ss_output_name": "tiny_xl_character"},
        tag_frequency={"10_tinychar": {"tinychar": 10, "1girl": 9, "solo": 6}},
    )
    style = write_kohya_lora(
        lora_dir / "tiny-xl-style.safetensors",
        xl.unet,
        xl.text_encoder,
        text_encoder_2=xl.text_encoder_2,
        text_encoder_prefix="lora_te1",
        kind="loha",
        unet_layout="ldm",
        seed=seed + 21,
        base_model_version="sdxl_base_v1-0",
        metadata={"modelspec.trigger_phrase": "tiny style, flat color"},
    )
    (root / "models" / "ESRGAN").mkdir(parents=True, exist_ok=True)
    (root / "embeddings").mkdir(parents=True, exist_ok=True)
    return TinySdxlModel(root, xl.checkpoint, vpred, vae, [character, style])
