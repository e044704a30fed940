"""``lineart_anime``: the pix2pix U-Net generator (3 -> 1 channels, 8 downsamplings, instance norm
without affine parameters, no dropout) the extension runs on netG.pth, and its arithmetic.

The module tree reproduces the file's parameter names (``model.model.1.model.3...``): each level is a
``Sequential`` whose index positions are those of the original layout, so the state dict loads
strictly. The width (ngf, 64 in the real file) is read off the file, so small stand-ins load too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional as F

DOWNS = 8  # the extension builds UnetGenerator(3, 1, 8, 64)


class _Level(nn.Module):
    """One U-Net level: down, the inner levels, up; its input and output are concatenated (skip),
    except at the outermost level, which ends in tanh."""

    def __init__(self, outer: int, inner: int, sub: _Level | None, *, in_ch: int | None = None) -> None:
        super().__init__()
        self.outermost = in_ch is not None
        down = nn.Conv2d(in_ch if in_ch is not None else outer, inner, 4, 2, 1, bias=True)
        up_in = inner if sub is None else inner * 2
        up = nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=True)

        def norm(ch: int) -> nn.Module:
            return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)

        layers: list[nn.Module]
        if self.outermost:
            assert sub is not None
            layers = [down, sub, nn.ReLU(True), up, nn.Tanh()]
        elif sub is None:  # innermost: no norm after its down conv, nothing inside
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, norm(inner), sub, nn.ReLU(True), up, norm(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    def __init__(self, ngf: int = 64, in_ch: int = 3, out_ch: int = 1, downs: int = DOWNS) -> None:
        super().__init__()
        level = _Level(ngf * 8, ngf * 8, None)
        for _ in range(downs - 5):
            level = _Level(ngf * 8, ngf * 8, level)
        for mult in (4, 2, 1):
            level = _Level(ngf * mult, ngf * mult * 2, level)
        self.model = _Level(out_ch, ngf, level, in_ch=in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.model(x)
        return y


def load(path: Path) -> UnetGenerator:
    """The generator from the converted safetensors (never a pickle), weights checked strictly."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    net = UnetGenerator(ngf=int(state["model.model.0.weight"].shape[0]))
    net.load_state_dict(state, strict=True)
    return net.eval()


def cubic(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H, W) or (H, W, C) float resized bicubically (OpenCV's INTER_CUBIC kernel, a = -0.75,
    half-pixel centres; borders replicate where OpenCV reflects)."""
    t = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)[0]
    return out[0] if x.ndim == 2 else out.permute(1, 2, 0)


@torch.no_grad()
def run(net: UnetGenerator, img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The extension's LineartAnimeDetector then its wrapper's inversion: the image at the next
    multiples of 256 (a uint8 image, so rounded), [-1, 1] in, ``* 127.5 + 127.5`` out, back to the
    input size, clipped and truncated to uint8, then ``255 - line`` (white background, dark lines)."""
    h, w = img.shape[:2]
    hn, wn = 256 * int(np.ceil(h / 256)), 256 * int(np.ceil(w / 256))
    big = cubic(torch.from_numpy(img.astype(np.float32)), hn, wn).round().clamp(0, 255)
    feed = (big / 127.5 - 1.0).permute(2, 0, 1)[None]
    line = net(feed)[0, 0] * 127.5 + 127.5
    line = cubic(line, h, w).clamp(0, 255).numpy().astype(np.uint8)
    return (255 - line).astype(np.uint8)
