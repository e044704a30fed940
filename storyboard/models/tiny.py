"""A tiny random-weight SD1.x model laid out like a WebUI install, for tests and demos offline.

It has the real SD1.x architecture (CrossAttn UNet, 4-channel VAE with 8x downsampling, CLIP text
encoder with the real 49408-token vocabulary and 77 positions) at toy widths, so every code path a
real checkpoint takes (single-file LDM keys, LoRA key names, embeddings, VAE scale) is exercised in
a second. Its pictures are noise, of course.

Layout under ``out_dir``::

    tiny-sd/                                 diffusers folder (also the config_dir of the single file)
    models/Stable-diffusion/tiny-sd.safetensors   same weights, LDM key names, config in metadata
    models/VAE/tiny-vae.safetensors          a second, different VAE in LDM key names
    models/Lora/*.safetensors                kohya LoRAs (when storyboard.models.lora_write exists)
    embeddings/EasyNegative.safetensors      textual inversion, emb_params (n_vectors, 32)

``storyboard.models.tiny_sdxl`` writes the same for SDXL (plain, and v-prediction + zero terminal SNR)
and a tiny SD2 file for family detection.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from storyboard.models.ldm_keys import diffusers_to_ldm_state_dict, vae_to_ldm_state_dict
from storyboard.models.load import CONFIG_METADATA_KEY, quiet_progress
from storyboard.models.stable_save import save_file_stable

HIDDEN = 32
EMBEDDING_VECTORS = 8

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": HIDDEN,
    "attention_head_dim": 4,
    "norm_num_groups": 32,
}
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    # Four levels give vae_scale_factor 8, as in SD: image size = latent size * 8.
    "block_out_channels": (8, 16, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": HIDDEN,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "projection_dim": HIDDEN,
    "hidden_act": "quick_gelu",
    # SD1.5's text_encoder/config.json values (the legacy ids select argmax pooling in transformers).
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class TinyModel:
    """Paths of everything write_tiny_model wrote."""

    root: Path  # use as `render.webui_root`
    diffusers_dir: Path
    checkpoint: Path
    vae: Path
    embedding: Path
    loras: list[Path] = field(default_factory=list)

    @property
    def config_dir(self) -> Path:
        """Config folder describing the single-file checkpoint (its metadata carries the same)."""
        return self.diffusers_dir


def _build(seed: int) -> tuple[Any, Any, Any, Any]:
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet: Any = UNet2DConditionModel(**UNET_CONFIG)
        vae: Any = AutoencoderKL(**VAE_CONFIG)
        text_encoder: Any = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        # Default inits leave many tensors at exactly 0 or 1 (norms, biases, zero-init outputs), which
        # would hide key-mapping mistakes between them; jitter everything so each tensor is unique.
        for module in (unet, vae, text_encoder):
            for p in module.parameters():
                p.data.add_(torch.randn_like(p) * 0.02)
    scheduler = PNDMScheduler.from_config(SCHEDULER_CONFIG)
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return unet, vae, text_encoder, scheduler


def _random_vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae: Any = AutoencoderKL(**VAE_CONFIG)
        for p in vae.parameters():
            p.data.add_(torch.randn_like(p) * 0.02)
    return vae.eval().requires_grad_(False)


def _write_diffusers(folder: Path, unet: Any, vae: Any, text_encoder: Any, scheduler: Any) -> None:
    from storyboard.prompt.tokenizer import tokenizer_dir

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with quiet_progress():
        text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    shutil.copytree(tokenizer_dir(), folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _folder_configs(folder: Path) -> dict[str, Any]:
    def read(rel: str) -> Any:
        return json.loads((folder / rel).read_text(encoding="utf-8"))

    return {
        "unet": read("unet/config.json"),
        "vae": read("vae/config.json"),
        "text_encoder": read("text_encoder/config.json"),
        "scheduler": read("scheduler/scheduler_config.json"),
    }


def write_tiny_model(out_dir: str | Path, seed: int = 0, *, loras: bool = True) -> TinyModel:
    """Write the tiny model (diffusers folder + single file + VAE + embedding [+ LoRAs]) under out_dir.

    Same seed, same tensors. Existing files of a previous run are overwritten.
    """
    root = Path(out_dir)
    unet, vae, text_encoder, scheduler = _build(seed)

    diffusers_dir = root / "tiny-sd"
    _write_diffusers(diffusers_dir, unet, vae, text_encoder, scheduler)

    ckpt_dir = root / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = diffusers_to_ldm_state_dict(unet, vae, text_encoder)
    # LDM checkpoints carry their noise schedule; WebUI (and our loader) read it from there.
    state["alphas_cumprod"] = scheduler.alphas_cumprod.to(torch.float32).contiguous()
    checkpoint = ckpt_dir / "tiny-sd.safetensors"
    meta = {CONFIG_METADATA_KEY: json.dumps(_folder_configs(diffusers_dir), sort_keys=True)}
    save_file_stable(state, str(checkpoint), metadata=meta)

    vae_dir = root / "models" / "VAE"
    vae_dir.mkdir(parents=True, exist_ok=True)
    vae_state = {k: v.contiguous() for k, v in vae_to_ldm_state_dict(_random_vae(seed + 1)).items()}
    vae_path = vae_dir / "tiny-vae.safetensors"
    save_file_stable(vae_state, str(vae_path))

    emb_dir = root / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 2)
    embedding = emb_dir / "EasyNegative.safetensors"
    save_file_stable({"emb_params": torch.randn(EMBEDDING_VECTORS, HIDDEN, generator=gen)}, str(embedding))

    lora_dir = root / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    (root / "models" / "ESRGAN").mkdir(parents=True, exist_ok=True)
    written = _write_loras(lora_dir, unet, text_encoder, seed) if loras else []
    # A ControlNet for this UNet in the original 1.1 layout (its own RNG: the tensors above keep).
    from storyboard.models.tiny_control import write_tiny_controlnet

    write_tiny_controlnet(root / "models" / "ControlNet" / "tiny-control.safetensors", unet, seed + 7)
    return TinyModel(
        root=root,
        diffusers_dir=diffusers_dir,
        checkpoint=checkpoint,
        vae=vae_path,
        embedding=embedding,
        loras=written,
    )


def _write_loras(folder: Path, unet: Any, text_encoder: Any, seed: int) -> list[Path]:
    try:
        from storyboard.models.lora_write import write_kohya_lora
    except ImportError:  # the LoRA writer is optional for the base model files
        return []
    character = write_kohya_lora(
        folder / "tiny-character.safetensors",
        unet,
        text_encoder,
        kind="lora",
        rank=4,
        seed=seed + 10,
        # A training output name that differs from the file name, as WebUI users often have.
        metadata={"ss_output_name": "tiny_character_v1"},
    )
    style = write_kohya_lora(
        folder / "tiny-style.safetensors", unet, text_encoder, kind="locon", rank=4, seed=seed + 11
    )
    return [character, style]


# SDXL (and SD2, for family detection) live in tiny_sdxl; re-exported here for existing callers.
from storyboard.models.tiny_sdxl import (  # noqa: E402
    SDXL_UNET_CONFIG,
    TinySdxl,
    TinySdxlModel,
    write_tiny_sd2_checkpoint,
    write_tiny_sdxl_checkpoint,
    write_tiny_sdxl_model,
)

__all__ = [
    "SDXL_UNET_CONFIG",
    "TinyModel",
    "TinySdxl",
    "TinySdxlModel",
    "write_tiny_model",
    "write_tiny_sd2_checkpoint",
    "write_tiny_sdxl_checkpoint",
    "write_tiny_sdxl_model",
]
