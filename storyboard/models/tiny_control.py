"""Tiny random ControlNets in the real file layouts, for tests and the tiny demo.

A ControlNet made from a tiny UNet (diffusers' ``ControlNetModel.from_unet``) with every tensor,
zero convolutions included, set to seeded random values (a fresh ControlNet's zero convolutions
output nothing, which would hide every mistake in how residuals are applied). Written as the
original ControlNet 1.1 layout (``control_model.*`` LDM names) or as a diffusers folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from storyboard.models.controlnet import WEIGHTS_NAME, controlnet_to_original

# The hint encoder keeps the real four levels (three stride-2 convs: image size / 8 = latent size),
# only narrower than the real (16, 32, 96, 256).
TINY_HINT_CHANNELS = (4, 8, 8, 16)


def tiny_controlnet(unet: Any, seed: int = 0, *, scale: float = 0.2) -> Any:
    """A random ControlNet shaped after `unet` (weights drawn from `seed`, the global RNG untouched)."""
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cn: Any = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=TINY_HINT_CHANNELS)
        for p in cn.parameters():
            p.data.copy_(torch.randn_like(p) * scale)
    return cn.eval().requires_grad_(False)


def write_tiny_controlnet(
    path: str | Path, unet: Any, seed: int = 0, *, layout: Literal["original", "diffusers"] = "original"
) -> Path:
    """Write a tiny random ControlNet for `unet`: `path` is a .safetensors file (original layout) or
    a folder (diffusers layout). Returns the path."""
    from safetensors.torch import save_file

    out = Path(path)
    cn = tiny_controlnet(unet, seed)
    if layout == "original":
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(controlnet_to_original(cn), str(out))
        return out
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in cn.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME))
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(cn.config).items()}
    (out / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", **config}, indent=1))
    return out
