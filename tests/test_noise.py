"""WebUI-compatible per-image noise."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from storyboard.errors import StoryboardError
from storyboard.render.noise import ImageRNG, batch_seeds, brownian_noise_sampler, resolve_seed

SHAPE = (4, 8, 6)


def test_first_equals_plain_randn_with_seed() -> None:
    rng = ImageRNG(SHAPE, [1234, 99], source="cpu")
    first = rng.first()
    assert first.shape == (2, *SHAPE) and first.dtype == torch.float32
    for i, seed in enumerate([1234, 99]):
        expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(first[i], expected)


def test_same_seeds_identical() -> None:
    a, b = ImageRNG(SHAPE, [5, 6], source="cpu"), ImageRNG(SHAPE, [5, 6], source="cpu")
    for _ in range(3):
        assert torch.equal(a.next(), b.next())


def test_batch_image_equals_alone() -> None:
    batch = ImageRNG(SHAPE, [10, 11, 12], source="cpu")
    alone = ImageRNG(SHAPE, [11], source="cpu")
    for _ in range(4):  # first noise and three ancestral draws
        assert torch.equal(batch.next()[1], alone.next()[0])


def test_next_continues_each_generator() -> None:
    rng = ImageRNG(SHAPE, [42], source="cpu")
    g = torch.Generator().manual_seed(42)
    draws = [rng.next() for _ in range(3)]
    for d in draws:
        assert torch.equal(d[0], torch.randn(SHAPE, generator=g))


def test_noise_sampler_adaptor_draws_next() -> None:
    rng = ImageRNG(SHAPE, [3], source="cpu")
    rng.next()
    ns = rng.noise_sampler()
    g = torch.Generator().manual_seed(3)
    torch.randn(SHAPE, generator=g)
    assert torch.equal(ns(torch.tensor(1.0), torch.tensor(0.5))[0], torch.randn(SHAPE, generator=g))


def test_eta_noise_seed_delta_reseeds_after_first() -> None:
    rng = ImageRNG(SHAPE, [7], source="cpu", eta_noise_seed_delta=31337)
    rng.next()
    expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7 + 31337))
    assert torch.equal(rng.next()[0], expected)


def test_gpu_source_on_cpu_device_uses_device_generator() -> None:
    # With no GPU the "gpu" source falls back to the given device (cpu here): same numbers.
    assert torch.equal(ImageRNG(SHAPE, [1], source="gpu").first(), ImageRNG(SHAPE, [1], source="cpu").first())
    with pytest.raises(StoryboardError):
        ImageRNG(SHAPE, [1], source="nv")


def test_resolve_seed() -> None:
    assert resolve_seed(123) == 123
    assert resolve_seed(-1, random.Random(0)) == random.Random(0).randrange(4294967294)
    assert 0 <= resolve_seed(None) < 4294967294
    with pytest.raises(StoryboardError):
        resolve_seed(-5)
    assert batch_seeds(100, 3) == [100, 101, 102]


@pytest.mark.skipif(importlib.util.find_spec("torchsde") is None, reason="torchsde not installed")
def test_brownian_noise_is_per_image_and_deterministic() -> None:
    sigmas = torch.tensor([14.6, 5.0, 1.0, 0.1, 0.0])
    x = torch.zeros(2, 4, 3, 3)
    a = brownian_noise_sampler(x, sigmas, [1, 2])
    b = brownian_noise_sampler(x[:1], sigmas, [1])
    na = a(sigmas[1], sigmas[2])
    nb = b(sigmas[1], sigmas[2])
    torch.testing.assert_close(na[0], nb[0])
    assert not torch.allclose(na[0], na[1])
    # Standardised Brownian increments: unit variance over many elements.
    big = brownian_noise_sampler(torch.zeros(1, 4, 32, 32), sigmas, [9])(
        torch.tensor(14.6), torch.tensor(0.1)
    )
    assert abs(big.std().item() - 1.0) < 0.05
