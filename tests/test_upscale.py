"""ESRGAN-family (RRDBNet) upscaler: key layouts, tiling, an exact nearest-neighbour net, pickle policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from storyboard.errors import ModelError
from storyboard.render.upscale import RRDBNet, load_upscaler, run_tiled, upscale_image

OLD_TOP = {"conv_first": "model.0", "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8",
           "conv_last": "model.10"}  # fmt: skip


def tiny_net(seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return net


def old_keys(sd: dict[str, torch.Tensor], nb: int) -> dict[str, torch.Tensor]:
    """The original ESRGAN names, written independently of the loader's converter."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "body":
            out[f"model.1.sub.{parts[1]}.{parts[2].upper()}.{parts[3]}.0.{parts[4]}"] = v
        elif parts[0] == "conv_body":
            out[f"model.1.sub.{nb}.{parts[1]}"] = v
        else:
            out[f"{OLD_TOP[parts[0]]}.{parts[1]}"] = v
    return out


def random_image(w: int, h: int, seed: int = 0, low: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(low, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    sd = {k: v.contiguous() for k, v in tiny_net().state_dict().items()}
    new = tmp_path / "RealESRGAN_tiny.safetensors"
    save_file({f"params_ema.{k}": v for k, v in sd.items()}, new)
    old = tmp_path / "ESRGAN_tiny.safetensors"
    save_file(old_keys(sd, 1), old)
    pth = tmp_path / "tiny.pth"
    torch.save({"params_ema": sd}, pth)
    return {"new": new, "old": old, "pth": pth}


def test_both_key_layouts_load_to_the_same_net(files: dict[str, Path]) -> None:
    a, b = load_upscaler(files["new"]), load_upscaler(files["old"])
    ref = tiny_net()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        want = ref(x)
        ya, yb = a.net(x), b.net(x)
    assert ya.shape == (1, 3, 64, 64) and a.scale == 4
    assert torch.equal(ya, want) and torch.equal(yb, want)
    img = random_image(16, 16)
    out_a = upscale_image(a, img, 64, 64)
    assert out_a.size == (64, 64)
    assert np.array_equal(np.asarray(out_a), np.asarray(upscale_image(b, img, 64, 64)))


def test_tiled_matches_untiled(files: dict[str, Path]) -> None:
    net = load_upscaler(files["new"]).net
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        whole = net(x)
        tiled = run_tiled(net, x, tile=16, overlap=24)
        rough = run_tiled(net, x, tile=16, overlap=2)
    assert tiled.shape == whole.shape == (1, 3, 160, 144)
    assert (tiled - whole).abs().max().item() < 1e-4
    assert (rough - whole).abs().max().item() > 1e-4  # the overlap is what makes them agree


def nearest_net() -> RRDBNet:
    """Weights that make the net exactly a nearest-neighbour 4x upscale (for positive inputs)."""
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for conv, ch in ((net.conv_first, 3), (net.conv_up1, 8), (net.conv_up2, 8), (net.conv_hr, 8),
                         (net.conv_last, 3)):  # fmt: skip
            for c in range(ch):
                conv.weight[c, c, 1, 1] = 1.0
    return net


def test_identity_weights_give_exact_nearest_upscale(tmp_path: Path) -> None:
    path = tmp_path / "nearest.safetensors"
    save_file({k: v.contiguous() for k, v in nearest_net().state_dict().items()}, path)
    model = load_upscaler(path)
    img = random_image(16, 12, seed=3, low=1)
    out = upscale_image(model, img, 64, 48)
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((64, 48), Image.Resampling.NEAREST)))
    # Scale 6.25 > 4: two net passes (16 -> 64 -> 256), Lanczos to the multiple-of-8 size, then exact.
    out2 = upscale_image(model, img, 100, 75)
    want = img.resize((256, 192), Image.Resampling.NEAREST).resize((96, 72), Image.Resampling.LANCZOS)
    want = want.resize((100, 75), Image.Resampling.LANCZOS)
    assert out2.size == (100, 75) and np.array_equal(np.asarray(out2), np.asarray(want))


def test_pickle_needs_allow_pickle(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="allow_pickle"):
        load_upscaler(files["pth"])
    model = load_upscaler(files["pth"], allow_pickle=True)
    ref = load_upscaler(files["new"])
    assert all(torch.equal(a, b) for a, b in zip(model.net.parameters(), ref.net.parameters(), strict=True))


def test_unknown_architecture_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "SwinIR_4x.safetensors"
    save_file({"layers.0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelError, match="SwinIR_4x"):
        load_upscaler(path)
