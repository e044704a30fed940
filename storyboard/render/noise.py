"""Seeds and noise the way WebUI makes them (``modules/rng.py``).

Each image of a batch owns a torch.Generator seeded with its own seed, so image i of a batch gets
exactly the noise it would get rendered alone. The first draw is the starting latent noise; every
later draw (ancestral noise, via ``noise_sampler()``) continues the same per-image generators.
``source="gpu"`` (WebUI's default) draws on the device, ``"cpu"`` draws on the CPU and moves the
result; CUDA and CPU generators give different numbers for the same seed.

``brownian_noise_sampler`` reproduces WebUI's per-image seeded Brownian tree for DPM++ SDE and
DPM++ 2M SDE (needs the optional ``torchsde`` package).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from storyboard.errors import StoryboardError

MAX_SEED = 4294967294  # WebUI draws random seeds with randrange(4294967294)


def resolve_seed(seed: int | None, rng: random.Random | None = None) -> int:
    """WebUI's seed rule: -1 (or None) means a random seed; other values are used as given."""
    if seed is None or int(seed) == -1:
        return (rng or random).randrange(MAX_SEED)
    seed = int(seed)
    if seed < 0:
        raise StoryboardError(f"Seed {seed} is negative.", hint="use -1 for a random seed or a number >= 0")
    return seed


def batch_seeds(seed: int, count: int) -> list[int]:
    """Seeds of a WebUI batch: seed, seed+1, ..."""
    return [seed + i for i in range(count)]


class ImageRNG:
    """Per-image noise generators (WebUI ``rng.ImageRNG`` without subseeds / seed resize)."""

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        source: str = "gpu",
        device: torch.device | str = "cpu",
        *,
        eta_noise_seed_delta: int = 0,
    ) -> None:
        if source not in ("cpu", "gpu"):
            raise StoryboardError(
                f"Unknown noise source {source!r}.", hint="use 'gpu' (WebUI default) or 'cpu'"
            )
        self.shape = tuple(int(s) for s in shape)
        self.seeds = [int(s) for s in seeds]
        self.source = source
        self.device = torch.device(device)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta)
        self.generators = [self._generator(s) for s in self.seeds]
        self.is_first = True

    @property
    def _gen_device(self) -> torch.device:
        return torch.device("cpu") if self.source == "cpu" or self.device.type == "mps" else self.device

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self._gen_device).manual_seed(int(seed))

    def _draw(self) -> Tensor:
        xs = [
            torch.randn(self.shape, generator=g, device=self._gen_device, dtype=torch.float32)
            for g in self.generators
        ]
        return torch.stack(xs).to(self.device)

    def first(self) -> Tensor:
        """The starting noise (B, *shape), float32."""
        noise = self._draw()
        if self.eta_noise_seed_delta:
            # WebUI's ENSD: everything after the first draw comes from generators at seed + delta.
            self.generators = [self._generator(s + self.eta_noise_seed_delta) for s in self.seeds]
        return noise

    def next(self) -> Tensor:
        """The next draw; the very first call returns first(), as in WebUI."""
        if self.is_first:
            self.is_first = False
            return self.first()
        return self._draw()

    def noise_sampler(self) -> Callable[[Tensor, Tensor], Tensor]:
        """Adaptor for sampling.sample(): ancestral noise from the per-image generators."""

        def draw(sigma: Tensor, sigma_next: Tensor) -> Tensor:
            return self.next()

        return draw


def brownian_noise_sampler(
    x: Tensor, sigmas: Tensor, seeds: Sequence[int]
) -> Callable[[Tensor, Tensor], Tensor]:
    """WebUI's DPM++ SDE noise: k-diffusion's BrownianTreeNoiseSampler with one tree per image,
    seeded with the image seed, over [min positive sigma, max sigma]."""
    try:
        import torchsde
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise StoryboardError(
            "The DPM++ SDE samplers need the 'torchsde' package to reproduce WebUI's Brownian noise.",
            hint="pip install torchsde, or pick another sampler",
        ) from exc
    if len(seeds) != x.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for a batch of {x.shape[0]}")
    t0 = torch.as_tensor(sigmas[sigmas > 0].min())
    t1 = torch.as_tensor(sigmas.max())
    w0 = torch.zeros_like(x[0])
    trees: list[Any] = [torchsde.BrownianTree(t0, w0, t1, entropy=int(s)) for s in seeds]

    def draw(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
        with warnings.catch_warnings():
            # float32 sigmas sit a rounding error outside the tree's float64 interval; torchsde
            # clamps and warns (WebUI's run does the same), so the warning is only noise here.
            warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
            w = torch.stack([tree(lo, hi) for tree in trees]) * sign
        return w / (b - a).abs().sqrt()

    return draw
