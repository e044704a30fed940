"""render.compile and render.low_memory on the CPU: each path runs, and gives the pixels it promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from storyboard.app.build import png_bytes
from storyboard.jobs import PanelJob
from storyboard.models.tiny import UNET_CONFIG, TinyModel
from storyboard.prompt.extra_networks import LoraUse
from storyboard.render import speed
from storyboard.render.batching import group_jobs
from storyboard.render.engine import DiffusersRenderer
from storyboard.story.schema import HiresFix, RenderSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def job(tiny: TinyModel, seed: int = 5, **kw: Any) -> PanelJob:
    s = RenderSettings(
        model="tiny-sd", sampler="DPM++ 2M Karras", steps=3, cfg_scale=7, width=64, height=64, clip_skip=2,
        hires=HiresFix(scale=1.5, upscaler="Latent", denoising_strength=0.7, steps=2),
        webui_root=tiny.root, **kw,
    )  # fmt: skip
    loras = (LoraUse("tiny_character_v1", 1.0, 1.0),)
    return PanelJob("p", 1, 1, "1girl, garden <lora:tiny_character_v1:1>", "EasyNegative", loras, seed, s)


def render(tmp_path: Path, jobs: list[PanelJob]) -> list[Image.Image]:
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    return [p.image for p in r.render(jobs)]


def diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def test_defaults_leave_the_job_hash_alone(tiny: TinyModel) -> None:
    spec = job(tiny).pixel_spec()
    assert "compile" not in spec and "low_memory" not in spec
    assert job(tiny, low_memory=True).spec_digest() != job(tiny).spec_digest()
    assert job(tiny, compile="inductor").spec_digest() != job(tiny).spec_digest()
    # The engine reads these from a group's first job, so they split groups.
    assert len(group_jobs([job(tiny), job(tiny, low_memory=True), job(tiny, compile="cuda-graphs")])) == 3


def test_cuda_graphs_on_cpu_renders_the_same_bytes(tiny: TinyModel, tmp_path: Path) -> None:
    # Graphs are CUDA-only; elsewhere the wrapper calls the UNet eagerly, so nothing may change.
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    [plain] = list(r.render([job(tiny)]))
    [graphed] = list(r.render([job(tiny, compile="cuda-graphs")]))
    assert isinstance(r.model.denoiser.unet, speed.GraphedUNet)
    assert png_bytes(plain.image, "") == png_bytes(graphed.image, "")


def test_compile_path_runs_and_matches_within_tolerance(
    tiny: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same torch.compile path as on a GPU, with the backend that needs no C++ build (seconds).
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    [plain] = render(tmp_path, [job(tiny)])
    [compiled] = render(tmp_path, [job(tiny, compile="inductor")])
    torch._dynamo.reset()
    assert diff(plain, compiled) <= 2


def test_low_memory_renders_one_image_at_a_time_and_repeats(tiny: TinyModel, tmp_path: Path) -> None:
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu", batch_size=4)
    jobs = [job(tiny, seed=s, low_memory=True) for s in (1, 2)]
    first = [p.image for p in r.render(jobs)]
    assert isinstance(r.model.denoiser.unet, speed.ChunkedUNet)
    assert r._batch_size(r.resolve(jobs[0]), 2) == 1
    again = [p.image for p in r.render(jobs)]
    assert [png_bytes(i, "") for i in first] == [png_bytes(i, "") for i in again]
    assert first[0].size == (96, 96)
    # Switching back unwraps the UNet and stops tiling.
    [normal] = list(r.render([job(tiny, seed=1)]))
    assert not isinstance(r.model.denoiser.unet, speed.ChunkedUNet)
    assert normal.image.size == first[0].size


def test_chunked_unet_matches_one_call() -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    x, c = torch.randn(4, 4, 8, 8), torch.randn(4, 77, 32)
    t = torch.tensor([10.0, 10.0, 500.0, 500.0])
    with torch.no_grad():
        whole = unet(x, t, encoder_hidden_states=c).sample
        chunked = speed.ChunkedUNet(unet)(x, t, c)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5)


def test_attention_backend_is_a_no_op_off_cuda() -> None:
    q = torch.randn(1, 2, 16, 8)
    before = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    with speed.attention_backend(torch.device("cpu")):
        inside = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert torch.equal(before, inside)


def test_unknown_compile_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="render.compile"):
        speed.compiled_unet(torch.nn.Linear(1, 1), "fast")
