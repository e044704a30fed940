"""A tiny inpainting model (9-channel UNet) beside the tiny SD1 model, in the original LDM layout.

Like sd-v1-5-inpainting it shares the base model's VAE and text encoder and has its own UNet whose
first convolution takes 9 channels (``model.diffusion_model.input_blocks.0.0.weight``: (32, 9, 3, 3)
here, (320, 9, 3, 3) in the real one). Its config metadata is the base model's, with 4 input
channels, as a real inpainting checkpoint meets the ordinary SD1.5 config: the loader must read the
channels from the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from storyboard.models.ldm_keys import diffusers_to_ldm_state_dict
from storyboard.models.load import CONFIG_METADATA_KEY
from storyboard.models.stable_save import save_file_stable
from storyboard.models.tiny import UNET_CONFIG, _build, _folder_configs

INPAINT_NAME = "tiny-sd-inpainting"


def write_tiny_inpaint_checkpoint(root: str | Path, seed: int = 0) -> Path:
    """Write models/Stable-diffusion/tiny-sd-inpainting.safetensors under a tiny model's root
    (written by ``write_tiny_model`` with the same seed); same seed, same bytes."""
    from diffusers import UNet2DConditionModel

    root = Path(root)
    _, vae, text_encoder, scheduler = _build(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 20)
        unet: Any = UNet2DConditionModel(**{**UNET_CONFIG, "in_channels": 9})
        for p in unet.parameters():  # as tiny.py: no tensor left at exactly 0 or 1
            p.data.add_(torch.randn_like(p) * 0.02)
    unet.eval().requires_grad_(False)
    state = diffusers_to_ldm_state_dict(unet, vae, text_encoder)
    state["alphas_cumprod"] = scheduler.alphas_cumprod.to(torch.float32).contiguous()
    meta = {CONFIG_METADATA_KEY: json.dumps(_folder_configs(root / "tiny-sd"), sort_keys=True)}
    path = root / "models" / "Stable-diffusion" / f"{INPAINT_NAME}.safetensors"
    save_file_stable(state, str(path), metadata=meta)
    return path
