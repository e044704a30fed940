"""``depth_midas`` (WebUI's default depth preprocessor; ``depth`` is its alias): MiDaS v3 DPT-Hybrid
through transformers' ``DPTForDepthEstimation``, with the extension's MidasDetector arithmetic around
it.

The extension feeds the padded image straight in (no resize to 384, no mean/std: ``img / 127.5 - 1``)
and min-max normalises the output to 0-255, truncated to uint8; ``depth_midas`` returns that depth
map (the normal map it also computes is ``normal_midas``'s).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray


def load(weights: Path) -> Any:
    """The model from its converted folder (config.json beside model.safetensors); safetensors only."""
    from transformers import DPTForDepthEstimation
    from transformers.utils import logging

    logging.disable_progress_bar()  # a render's own progress is the one a user reads
    model = DPTForDepthEstimation.from_pretrained(str(weights.parent), use_safetensors=True).eval()
    # MiDaS resizes its position embedding to any input grid; the transformers port does so only when
    # asked, and its model never asks (it refuses sizes other than 384), so the embeddings always ask.
    emb = model.dpt.embeddings
    emb.forward = functools.partial(type(emb).forward, emb, interpolate_pos_encoding=True)
    return model


def depth(model: Any, x: torch.Tensor) -> torch.Tensor:
    """(1, H, W) predicted depth of a (1, 3, H, W) input, H and W multiples of the patch size.

    ``DPTForDepthEstimation.forward`` reshapes a hybrid model's tokens to a square grid; this is its
    own sequence (backbone activations, the chosen ViT layers, neck, head) with the grid's real
    height and width, so a portrait or landscape image maps as it does in MiDaS."""
    cfg = model.config
    out = model.dpt(x, output_hidden_states=True)
    layers = [f for i, f in enumerate(out.hidden_states[1:]) if i in cfg.backbone_out_indices[2:]]
    feats = [*out.intermediate_activations, *layers]
    grid = (x.shape[2] // cfg.patch_size, x.shape[3] // cfg.patch_size)
    result: torch.Tensor = model.head(model.neck(feats, *grid))
    return result


@torch.no_grad()
def run(model: Any, img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(H, W) uint8 depth of an (H, W, 3) RGB image (already padded to multiples of 64), as the
    extension computes it."""
    x = torch.from_numpy(img.astype(np.float32)) / 127.5 - 1.0
    d = depth(model, x.permute(2, 0, 1)[None])[0]
    d = d - d.min()
    d = d / d.max()
    return (d * 255.0).clamp(0, 255).numpy().astype(np.uint8)
