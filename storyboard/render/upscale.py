"""ESRGAN-family pixel upscalers (RRDBNet) for hires fix, as WebUI uses them.

Covers the files WebUI users put in models/ESRGAN and models/RealESRGAN: Real-ESRGAN's "new arch"
keys (conv_first, body.N.rdb1.conv1, ..., often under "params_ema"/"params") and the original ESRGAN
keys (model.0, model.1.sub.N.RDB1.conv1.0, ...), which are renamed to the new ones. Real-ESRGAN's
x2/x1 variants (pixel-unshuffled input, 12 or 48 input channels) work too.

WebUI semantics kept: images reach the net as BGR in [0, 1] and come back rounded to 8 bits; the net
runs up to three times until the image is at least the destination size (``Upscaler.upscale``), then
one Lanczos resize gives the exact size. Tiles: WebUI averages overlapping 192px tiles; here each tile
is run with ``overlap`` pixels of real context around it and only its centre is kept, which matches an
untiled run exactly whenever the overlap covers the net's receptive field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from storyboard.errors import ModelError
from storyboard.models.checkpoint_file import read_state_dict
from storyboard.models.pickle_gate import PICKLE_HINT

__all__ = ["RRDBNet", "UpscalerModel", "convert_old_esrgan", "load_upscaler", "upscale_image"]


class _ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        out: Tensor = self.conv5(torch.cat(feats, 1)) * 0.2 + x
        return out


class _RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = _ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = _ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = _ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x
        return out


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator; ``unshuffle`` > 1 is Real-ESRGAN's x2 (2) / x1 (4) input packing."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        unshuffle: int = 1,
    ) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.scale = 4 // unshuffle
        self.conv_first = nn.Conv2d(num_in_ch * unshuffle * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[_RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out: Tensor = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        return out


# Loading -------------------------------------------------------------------------------------------

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr",
            "model.10": "conv_last"}  # fmt: skip


def convert_old_esrgan(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original ESRGAN key names -> Real-ESRGAN's (unknown keys are kept, so loading names them)."""
    blocks = {int(m.group(1)) for k in sd if (m := _OLD_RDB.match(k))}
    nb = max(blocks) + 1 if blocks else 0
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        m = _OLD_RDB.match(k)
        if m:
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = v
            continue
        base, _, leaf = k.rpartition(".")
        if base == f"model.1.sub.{nb}":
            out[f"conv_body.{leaf}"] = v
        elif base in _OLD_TOP:
            out[f"{_OLD_TOP[base]}.{leaf}"] = v
        else:
            out[k] = v
    return out


@dataclass
class UpscalerModel:
    """A loaded upscaler: the net (eval mode, on its device and dtype) and where it came from."""

    net: RRDBNet
    path: Path
    name: str

    @property
    def scale(self) -> int:
        return self.net.scale


def _read(path: Path, allow_pickle: bool) -> dict[str, Tensor]:
    if path.suffix.lower() == ".safetensors":
        sd = read_state_dict(path)
    else:
        if not allow_pickle:
            raise ModelError(
                f"The upscaler {path} is a pickle file, which can run arbitrary code when loaded, "
                "so it is refused by default.",
                hint=f"prefer a .safetensors version of it; if you trust the file, {PICKLE_HINT}"
                " (render.allow_pickle)",
            )
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"Cannot read the upscaler {path}: torch.load(weights_only=True) failed ({exc})."
            ) from exc
        if not isinstance(obj, dict):
            raise ModelError(f"The upscaler {path} does not hold a state dict of tensors.")
        sd = obj
    # Real-ESRGAN releases nest the weights (pickle) or prefix them (flattened safetensors).
    for wrap in ("params_ema", "params", "state_dict"):
        inner = sd.get(wrap)
        if isinstance(inner, dict):
            sd = inner
            break
        prefixed = {k[len(wrap) + 1 :]: v for k, v in sd.items() if k.startswith(wrap + ".")}
        if prefixed:
            sd = prefixed
            break
    return {str(k): v for k, v in sd.items() if isinstance(v, Tensor)}


def _build(sd: dict[str, Tensor], path: Path) -> RRDBNet:
    if "model.0.weight" in sd:
        sd = convert_old_esrgan(sd)
    unknown = ModelError(
        f"{path} is not an ESRGAN/Real-ESRGAN (RRDBNet 4x) upscaler this engine knows.",
        hint="use an ESRGAN-family 4x model (e.g. RealESRGAN_x4plus, 4x-UltraSharp), or the Lanczos upscaler",
    )
    try:
        first, grow, last = sd["conv_first.weight"], sd["body.0.rdb1.conv1.weight"], sd["conv_last.weight"]
    except KeyError:
        raise unknown from None
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("body.")}
    in_ch = int(first.shape[1])
    unshuffle = {3: 1, 12: 2, 48: 4}.get(in_ch)
    if unshuffle is None:
        raise unknown
    net = RRDBNet(3, int(last.shape[0]), int(first.shape[0]), len(blocks), int(grow.shape[0]), unshuffle)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path} does not fit the RRDBNet layout: {exc}", hint=unknown.hint) from None
    return net


def load_upscaler(
    path: str | Path,
    *,
    allow_pickle: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> UpscalerModel:
    """Read an ESRGAN-family upscaler file; pickle formats (.pth/.pt) only with ``allow_pickle``."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"The upscaler file {p} does not exist.")
    net = _build(_read(p, allow_pickle), p)
    net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return UpscalerModel(net, p, p.stem)


# Inference -----------------------------------------------------------------------------------------


def run_tiled(net: RRDBNet, x: Tensor, tile: int = 192, overlap: int = 16) -> Tensor:
    """net(x) for (1, C, H, W) x, one ``tile``-sized piece at a time with ``overlap`` context pixels."""
    _, _, h, w = x.shape
    s = net.scale
    step = net.unshuffle  # crops must stay on the pixel-unshuffle grid
    tile = max(step, tile - tile % step)
    overlap = overlap + (-overlap) % step
    if h <= tile and w <= tile:
        whole: Tensor = net(x)
        return whole
    out = x.new_zeros((x.shape[0], int(net.conv_last.out_channels), h * s, w * s))
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            cy0, cx0 = max(0, y0 - overlap), max(0, x0 - overlap)
            cy1, cx1 = min(h, y1 + overlap), min(w, x1 + overlap)
            piece = net(x[:, :, cy0:cy1, cx0:cx1])
            oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = piece[
                :, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
            ]
    return out


def _net_pass(model: UpscalerModel, img: Image.Image, tile: int, overlap: int) -> Image.Image:
    param = next(model.net.parameters())
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)[:, :, ::-1] / 255.0  # WebUI feeds BGR
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    with torch.inference_mode():
        y = run_tiled(model.net, x.to(device=param.device, dtype=param.dtype), tile, overlap)
    out = y[0].float().cpu().clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray((out * 255.0).round().astype(np.uint8)))


def upscale_image(
    model: UpscalerModel,
    img: Image.Image,
    target_w: int,
    target_h: int,
    *,
    tile: int = 192,
    overlap: int = 16,
) -> Image.Image:
    """WebUI ``images.resize_image(0, img, w, h, upscaler)``: the net (up to 3 passes), then Lanczos."""
    scale = max(target_w / img.width, target_h / img.height)
    if scale > 1.0:
        # Upscaler.upscale: the destination is rounded down to a multiple of 8.
        dest_w, dest_h = int((img.width * scale) // 8 * 8), int((img.height * scale) // 8 * 8)
        for _ in range(3):
            if img.width >= dest_w and img.height >= dest_h:
                break
            img = _net_pass(model, img, tile, overlap)
        if img.size != (dest_w, dest_h):
            img = img.resize((dest_w, dest_h), resample=Image.Resampling.LANCZOS)
    if img.size != (target_w, target_h):
        img = img.resize((target_w, target_h), resample=Image.Resampling.LANCZOS)
    return img
