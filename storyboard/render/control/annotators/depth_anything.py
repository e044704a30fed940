"""``depth_anything``: Depth Anything (v1) relative depth through transformers'
``DepthAnythingForDepthEstimation``, with the extension's DepthAnythingDetector arithmetic around it.

The extension's ``depth_anything`` preprocessor is ``colored=False``: a grey map, the depth min-max
normalised to 0-255 over the (padded) image and truncated to uint8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional as F

from storyboard.render.control.annotators.lineart_anime import cubic

SIDE, MULTIPLE = 518, 14
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def load(weights: Path) -> Any:
    """The model from its repo folder (config.json beside model.safetensors); safetensors only."""
    from transformers import DepthAnythingForDepthEstimation
    from transformers.utils import logging

    logging.disable_progress_bar()  # a render's own progress is the one a user reads
    return DepthAnythingForDepthEstimation.from_pretrained(str(weights.parent), use_safetensors=True).eval()


def net_size(h: int, w: int) -> tuple[int, int]:
    """The depth-anything ``Resize`` the extension uses (518, keep aspect, ``lower_bound``, multiple of
    14): the larger scale so both sides reach 518, each side rounded to a multiple of 14, up to the
    next one when rounding would fall under 518."""
    k = max(SIDE / h, SIDE / w)

    def side(x: float) -> int:
        y = int(np.round(x / MULTIPLE) * MULTIPLE)
        return y if y >= SIDE else int(np.ceil(x / MULTIPLE) * MULTIPLE)

    return side(k * h), side(k * w)


@torch.no_grad()
def run(model: Any, img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(H, W) uint8 depth of an (H, W, 3) RGB image, as the extension computes it."""
    h, w = img.shape[:2]
    # The extension converts its RGB input with COLOR_BGR2RGB, so the network sees the channels
    # reversed; kept, since that is what its maps are made from.
    x = torch.from_numpy(img[:, :, ::-1].astype(np.float32) / 255.0)
    nh, nw = net_size(h, w)
    x = cubic(x, nh, nw)
    x = (x - torch.tensor(MEAN)) / torch.tensor(STD)
    depth = model(pixel_values=x.permute(2, 0, 1)[None]).predicted_depth  # (1, nh, nw)
    depth = F.interpolate(depth[None], (h, w), mode="bilinear", align_corners=False)[0, 0]
    depth = (depth - depth.min()) / (depth.max() - depth.min()) * 255.0
    return depth.numpy().astype(np.uint8)
