"""Hires-fix arithmetic against WebUI's numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from storyboard.errors import StoryboardError
from storyboard.render.denoiser import scaled_linear_alphas_cumprod
from storyboard.render.hires import (
    LATENT_UPSCALERS,
    hires_size,
    hires_size_to,
    img2img_sigmas,
    img2img_steps,
    noised_latent,
    upscale_image_lanczos,
    upscale_latent,
)
from storyboard.render.sampling import discrete_sigmas, parse_sampler_name

TABLE = discrete_sigmas(scaled_linear_alphas_cumprod())


def test_20_steps_at_0_7_enters_28_step_schedule_at_8() -> None:
    assert img2img_steps(20, 0.7) == (28, 19)
    spec = parse_sampler_name("DPM++ 2S a Karras")
    sig = img2img_sigmas(lambda n: spec.sigmas(n, TABLE), 20, 0.7)
    full = spec.sigmas(28, TABLE)
    assert len(full) == 29
    assert torch.equal(sig, full[8:])
    assert len(sig) == 21  # exactly 20 steps remain


def test_img2img_steps_other_strengths() -> None:
    assert img2img_steps(20, 0.5) == (40, 19)
    assert img2img_steps(15, 0.75) == (20, 14)
    assert img2img_steps(20, 1.0) == (20, 19)  # min(d, 0.999): int(20/0.999) = 20
    with pytest.raises(StoryboardError):
        img2img_steps(20, 0.0)


def test_hires_size() -> None:
    assert hires_size(448, 640, 2) == (896, 1280)
    assert hires_size(512, 768, 1.5) == (768, 1152)
    assert hires_size(500, 700, 1.33) == (665, 931)  # int() truncation
    assert hires_size_to(512, 768, 1024, 0) == (1024, 1536, 0, 0)
    assert hires_size_to(512, 768, 0, 1000) == (666, 1000, 0, 0)
    assert hires_size_to(512, 512, 1024, 768) == (1024, 1024, 0, 32)


def test_latent_upscaler_table() -> None:
    assert LATENT_UPSCALERS["Latent"] == ("bilinear", False)
    assert LATENT_UPSCALERS["Latent (bicubic antialiased)"] == ("bicubic", True)
    assert LATENT_UPSCALERS["Latent (nearest-exact)"] == ("nearest-exact", False)


def test_upscale_latent_size_and_values() -> None:
    latent = torch.randn(2, 4, 80, 56, generator=torch.Generator().manual_seed(0))
    up = upscale_latent(latent, 2, "Latent")
    assert up.shape == (2, 4, 160, 112)
    torch.testing.assert_close(up, F.interpolate(latent, size=(160, 112), mode="bilinear", antialias=False))
    up2 = upscale_latent(latent, 1.33, "Latent (bicubic antialiased)")
    # width 448*1.33 = 595.84 -> 595 // 8 = 74; height 640*1.33 = 851.2 -> 851 // 8 = 106
    assert up2.shape == (2, 4, 106, 74)
    torch.testing.assert_close(up2, F.interpolate(latent, size=(106, 74), mode="bicubic", antialias=True))
    assert upscale_latent(latent, (1000, 700), "Latent (nearest)").shape == (2, 4, 125, 87)
    with pytest.raises(StoryboardError):
        upscale_latent(latent, 2, "R-ESRGAN 4x+")


def test_lanczos_is_pil_lanczos() -> None:
    img = Image.effect_noise((32, 24), 40).convert("RGB")
    out = upscale_image_lanczos(img, 64, 48)
    assert out.size == (64, 48)
    assert out.tobytes() == img.resize((64, 48), Image.Resampling.LANCZOS).tobytes()


def test_noised_latent() -> None:
    lat, noise = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 2.0)
    out = noised_latent(lat, noise, torch.tensor([3.0, 1.0, 0.0]))
    assert torch.equal(out, torch.full((1, 4, 2, 2), 7.0))
