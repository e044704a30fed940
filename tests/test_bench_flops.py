"""bench/flops.py: the UNet FLOP count from config and shapes against torch's own counter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from flops import counted_flops, unet_flops, vae_decode_flops  # noqa: E402

from storyboard.models.load import configs_from_dir, shipped_config_dir  # noqa: E402
from storyboard.models.tiny import UNET_CONFIG, VAE_CONFIG  # noqa: E402


@pytest.mark.parametrize(("batch", "h", "w", "tokens"), [(2, 12, 8, 77), (3, 13, 7, 154), (1, 8, 8, 77)])
def test_unet_count_equals_torch_flop_counter_on_the_tiny_model(
    batch: int, h: int, w: int, tokens: int
) -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    x = torch.randn(batch, 4, h, w)
    c = torch.randn(batch, tokens, UNET_CONFIG["cross_attention_dim"])
    with torch.no_grad():
        counted = counted_flops(lambda: unet(x, 10, encoder_hidden_states=c))
    assert unet_flops(unet.config, batch, h, w, tokens) == counted


def test_sd15_sizes_match_the_measured_profile() -> None:
    # The performance notes counted these with torch.utils.flop_counter on the real-size UNet.
    cfg = configs_from_dir(shipped_config_dir("sd1"), "sd1")["unet"]
    assert unet_flops(cfg, 1, 80, 56) / 1e12 == pytest.approx(0.891, abs=5e-4)
    assert unet_flops(cfg, 1, 160, 112) / 1e12 == pytest.approx(5.313, abs=5e-4)
    assert unet_flops(cfg, 2, 80, 56) == 2 * unet_flops(cfg, 1, 80, 56)


def test_vae_decode_count_runs_on_the_meta_device() -> None:
    small = vae_decode_flops(VAE_CONFIG, 8, 12)
    assert small > 0 and vae_decode_flops(VAE_CONFIG, 16, 12) == pytest.approx(2 * small, rel=0.05)
