"""CompVisDenoiser and CFGDenoiser over a tiny random diffusers UNet."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import UNet2DConditionModel

from storyboard.render.denoiser import (
    CFGDenoiser,
    CompVisDenoiser,
    Conditioning,
    merge_schedules,
    scaled_linear_alphas_cumprod,
    stack_conds,
)


@pytest.fixture(scope="module")
def unet() -> Any:
    torch.manual_seed(0)
    model: Any = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    return model.eval()


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_alphas_cumprod_matches_diffusers_scheduler() -> None:
    from diffusers import DDPMScheduler

    sched: Any = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    torch.testing.assert_close(
        scaled_linear_alphas_cumprod(), sched.alphas_cumprod.float(), rtol=1e-6, atol=0
    )


def test_sigma_t_roundtrip(unet: Any) -> None:
    den = CompVisDenoiser(unet)
    t = torch.tensor([0.0, 1.0, 17.5, 400.25, 999.0])
    torch.testing.assert_close(den.sigma_to_t(den.t_to_sigma(t)), t, atol=2e-3, rtol=0)
    assert den.sigma_min == pytest.approx(0.029168, abs=1e-5)
    assert den.sigma_max == pytest.approx(14.614642, abs=1e-5)


@torch.no_grad()
def test_denoiser_formula(unet: Any) -> None:
    den = CompVisDenoiser(unet)
    x = rand(2, 4, 8, 8)
    sigma = torch.tensor([3.0, 0.5])
    cond = rand(2, 77, 32, seed=1)
    out = den(x, sigma, cond=cond)
    # Independent: the UNet sees x / sqrt(s^2 + 1) at the continuous timestep; D = x - s * eps.
    ts = den.sigma_to_t(sigma)
    for i in range(2):
        s = sigma[i].item()
        eps = unet(
            x[i : i + 1] / (s**2 + 1) ** 0.5, ts[i : i + 1], encoder_hidden_states=cond[i : i + 1]
        ).sample
        torch.testing.assert_close(out[i : i + 1], x[i : i + 1] - s * eps, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_v_prediction_formula(unet: Any) -> None:
    den = CompVisDenoiser(unet, prediction_type="v_prediction")
    x = rand(1, 4, 8, 8)
    sigma = torch.tensor([2.0])
    cond = rand(1, 77, 32, seed=1)
    v = unet(x / 5**0.5, den.sigma_to_t(sigma), encoder_hidden_states=cond).sample
    expected = x / 5 - v * 2 / 5**0.5
    torch.testing.assert_close(den(x, sigma, cond=cond), expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_cfg_equals_two_separate_calls(unet: Any) -> None:
    den = CompVisDenoiser(unet)
    x = rand(2, 4, 8, 8)
    sigma = torch.tensor([5.0, 5.0])
    cond, uncond = rand(2, 77, 32, seed=1), rand(2, 77, 32, seed=2)
    out = CFGDenoiser(den, cond, uncond, 7.0)(x, sigma)
    d_c, d_u = den(x, sigma, cond=cond), den(x, sigma, cond=uncond)
    torch.testing.assert_close(out, d_u + 7.0 * (d_c - d_u), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_batching_two_panels_equals_one_at_a_time(unet: Any) -> None:
    den = CompVisDenoiser(unet)
    x = rand(2, 4, 8, 8)
    sigma = torch.tensor([4.0, 4.0])
    cond, uncond = rand(2, 77, 32, seed=1), rand(2, 77, 32, seed=2)
    both = CFGDenoiser(den, cond, uncond, 6.5)(x, sigma)
    for i in range(2):
        one = CFGDenoiser(den, cond[i : i + 1], uncond[i : i + 1], 6.5)(x[i : i + 1], sigma[i : i + 1])
        torch.testing.assert_close(both[i : i + 1], one, rtol=1e-4, atol=1e-4)


class Recorder:
    """A fake k-diffusion model that records each call's batch and token length."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.conds: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, added_cond_kwargs=None):  # type: ignore[no-untyped-def]
        self.calls.append((x.shape[0], cond.shape[1]))
        self.conds.append(cond)
        return x * 0 + cond.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


def test_different_lengths_two_calls_by_default() -> None:
    rec = Recorder()
    cond, uncond = torch.full((1, 154, 8), 2.0), torch.full((1, 77, 8), 1.0)
    out = CFGDenoiser(rec, cond, uncond, 3.0)(torch.zeros(1, 4, 2, 2), torch.tensor([1.0]))
    assert rec.calls == [(1, 154), (1, 77)]
    torch.testing.assert_close(out, torch.full((1, 4, 2, 2), 1.0 + 3.0 * (2.0 - 1.0)))


def test_pad_cond_uncond_uses_one_call() -> None:
    rec = Recorder()
    empty = torch.full((1, 77, 8), 5.0)
    cond, uncond = torch.full((1, 154, 8), 2.0), torch.full((1, 77, 8), 1.0)
    cfg = CFGDenoiser(rec, cond, uncond, 3.0, pad_cond_uncond=True, empty_chunk=empty)
    cfg(torch.zeros(1, 4, 2, 2), torch.tensor([1.0]))
    assert rec.calls == [(2, 154)]
    assert cfg.padded
    # uncond got the empty chunk appended
    torch.testing.assert_close(rec.conds[0][1, 77:], empty[0])
    torch.testing.assert_close(rec.conds[0][1, :77], uncond[0])


def test_same_length_is_one_batched_call() -> None:
    rec = Recorder()
    CFGDenoiser(rec, torch.ones(2, 77, 8), torch.zeros(2, 77, 8), 7.0)(torch.zeros(2, 4, 2, 2), torch.ones(2))
    assert rec.calls == [(4, 77)]


def test_prompt_editing_switches_at_step() -> None:
    rec = Recorder()
    a, b = torch.full((1, 77, 8), 1.0), torch.full((1, 77, 8), 2.0)
    cfg = CFGDenoiser(rec, None, torch.zeros(1, 77, 8), 1.0, cond_schedule=[(2, a), (10, b)])  # type: ignore[arg-type]
    outs = [cfg(torch.zeros(1, 1, 1, 1), torch.ones(1)).item() for _ in range(5)]
    # steps 0, 1, 2 use a (step <= 2), then b
    assert outs == [1.0, 1.0, 1.0, 2.0, 2.0]
    cfg.reset()
    assert cfg(torch.zeros(1, 1, 1, 1), torch.ones(1)).item() == 1.0


def test_stack_and_merge_schedules() -> None:
    short, long = torch.ones(77, 4), torch.arange(154 * 4, dtype=torch.float32).reshape(154, 4)
    stacked = stack_conds([short, long])
    assert stacked.shape == (2, 154, 4)
    torch.testing.assert_close(stacked[0, 77:], short[-1:].repeat(77, 1))
    p1 = [(5, torch.zeros(77, 4)), (20, torch.ones(77, 4))]
    p2 = [(20, torch.full((77, 4), 3.0))]
    merged = merge_schedules([p1, p2])
    assert [e for e, _ in merged] == [5, 20]
    assert merged[0][1][:, 0, 0].tolist() == [0.0, 3.0]
    assert merged[1][1][:, 0, 0].tolist() == [1.0, 3.0]


def test_added_cond_kwargs_are_concatenated() -> None:
    seen: dict[str, torch.Tensor] = {}

    def model(x, sigma, cond, added_cond_kwargs=None):  # type: ignore[no-untyped-def]
        seen.update(added_cond_kwargs)
        return x

    c = Conditioning(torch.ones(1, 77, 8), {"text_embeds": torch.ones(1, 16)})
    u = Conditioning(torch.zeros(1, 77, 8), {"text_embeds": torch.zeros(1, 16)})
    CFGDenoiser(model, c, u, 5.0)(torch.zeros(1, 4, 2, 2), torch.ones(1))
    assert seen["text_embeds"][:, 0].tolist() == [1.0, 0.0]
