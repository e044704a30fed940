"""Workload A the way a user of plain diffusers renders it: the comparison rows of bench/speed.py.

Adapted from the plain-diffusers baseline script the performance notes (issue 16) were measured
with; that script lives outside this repository. Same calls: a StableDiffusionPipeline base pass
(DPMSolverMultistep with Karras sigmas = DPM++ 2M Karras), latent 2x nearest upscale, an img2img
pass at strength 0.7, VAE decode. Two loops:

- naive: per panel, load both LoRA files from disk, set them, render at batch 1, unload;
- fused: LoRAs merged into the weights once, channels-last on CUDA, panels batched.

The modules come from the same checkpoint file storyboard renders (a fresh copy, so diffusers'
LoRA code never touches storyboard's patched weights). LoRAs go through diffusers'
``load_lora_weights`` / ``fuse_lora`` when PEFT is installed, as in the baseline; without PEFT
(this repository's test environment) they are merged by hand from the kohya files, and every row
says which (``lora_impl``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class Plain:
    pipe: Any
    i2i: Any
    device: torch.device
    dtype: torch.dtype
    calls: list[tuple[int, int, int, int]]  # UNet calls: (batch, latent h, latent w, tokens)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_plain(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> Plain:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    from storyboard.models.load import load_pipeline_components

    comps = load_pipeline_components(checkpoint, device=device, dtype=dtype)
    diffusers_logging.set_verbosity_error()  # the pipelines' config and safety-checker notices
    sched = DPMSolverMultistepScheduler(
        use_karras_sigmas=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    pipe = StableDiffusionPipeline(
        unet=comps.unet,
        vae=comps.vae,
        text_encoder=comps.text_encoder,
        tokenizer=None,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    calls: list[tuple[int, int, int, int]] = []

    def record(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x, c = args[0], kwargs["encoder_hidden_states"]
        calls.append((int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]), int(c.shape[1])))

    comps.unet.register_forward_pre_hook(record, with_kwargs=True)
    return Plain(pipe, i2i, device, dtype, calls)


def embeds(p: Plain, n: int, seed: int) -> Any:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, p.pipe.text_encoder.config.vocab_size, (n, 77), generator=g).to(p.device)
    with torch.no_grad():
        return p.pipe.text_encoder(ids)[0]


def panels(p: Plain, n: int, width: int, height: int, steps: int, seed: int) -> float:
    """Render n panels in one batch (base, latent 2x, img2img 0.7, decode); returns seconds."""
    pe, ne = embeds(p, n, seed), embeds(p, n, seed + 1)
    g = torch.Generator(p.device).manual_seed(seed)
    sync(p.device)
    t0 = time.perf_counter()
    lat = p.pipe(
        prompt_embeds=pe,
        negative_prompt_embeds=ne,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=7.0,
        generator=g,
        output_type="latent",
    ).images
    up = torch.nn.functional.interpolate(lat, scale_factor=2, mode="nearest")
    lat2 = p.i2i(
        prompt_embeds=pe,
        negative_prompt_embeds=ne,
        image=up,
        strength=0.7,
        num_inference_steps=steps,
        guidance_scale=7.0,
        generator=g,
        output_type="latent",
    ).images
    with torch.no_grad():
        p.pipe.vae.decode(lat2 / p.pipe.vae.config.scaling_factor)
    sync(p.device)
    return time.perf_counter() - t0


def have_peft() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def lora_ops(
    p: Plain, files: list[Path], weights: list[float]
) -> tuple[Callable[[], None], Callable[[], None], str]:
    """(load-and-set, unload) for the LoRA files, and which implementation they use."""
    if have_peft():
        names = [f"l{i}" for i in range(len(files))]

        def load() -> None:
            for f, n in zip(files, names, strict=True):
                p.pipe.load_lora_weights(str(f), adapter_name=n)
            p.pipe.set_adapters(names, adapter_weights=weights)

        return load, p.pipe.unload_lora_weights, "diffusers+peft"
    backups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def merge() -> None:
        for f, w in zip(files, weights, strict=True):
            for weight, delta in _kohya_deltas(p, f):
                backups.setdefault(id(weight), (weight, weight.detach().clone()))
                weight.data += (w * delta).to(weight.dtype)

    def unmerge() -> None:
        for weight, base in backups.values():
            weight.data.copy_(base)
        backups.clear()

    return merge, unmerge, "manual-merge"


def _kohya_deltas(p: Plain, path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, scale * up @ down) per layer of a kohya LoRA file, read from disk each call."""
    from safetensors.torch import load_file

    from storyboard.models.lora_keys import build_key_map

    sd = load_file(str(path), device=str(p.device))
    # text_encoder_2 is SDXL's (bench/plain_sdxl.py); an SD1 pipeline has none and None is skipped.
    modules = {"unet": p.pipe.unet, "text_encoder": p.pipe.text_encoder}
    modules["text_encoder_2"] = getattr(p.pipe, "text_encoder_2", None)
    targets = build_key_map(modules)
    out = []
    for key in {k.split(".")[0] for k in sd if k.endswith("lora_down.weight")}:
        target = targets.get(key)
        if target is None:
            continue
        down, up = sd[f"{key}.lora_down.weight"].float(), sd[f"{key}.lora_up.weight"].float()
        alpha = float(sd[f"{key}.alpha"]) if f"{key}.alpha" in sd else float(down.shape[0])
        weight = target.weight
        delta = (up.flatten(1) @ down.flatten(1)) * (alpha / down.shape[0])
        if delta.numel() == weight.numel():  # conv LoCon layers with a 1x1 up: same element order
            out.append((weight, delta.reshape(weight.shape)))
    return out


def run_plain(
    p: Plain,
    files: list[Path],
    weights: list[float],
    *,
    width: int,
    height: int,
    steps: int,
    naive_panels: int,
    batches: list[int],
) -> list[dict[str, Any]]:
    """The naive loop, then the fused loop at each batch size; one row each, with its UNet calls."""
    load, unload, impl = lora_ops(p, files, weights)
    rows: list[dict[str, Any]] = []
    panels(p, 1, width, height, steps, 0)  # warm-up, no LoRA
    p.calls.clear()
    total = 0.0
    for k in range(naive_panels):
        sync(p.device)
        t0 = time.perf_counter()
        load()
        total += time.perf_counter() - t0 + panels(p, 1, width, height, steps, 100 + k)
        t0 = time.perf_counter()
        unload()
        sync(p.device)
        total += time.perf_counter() - t0
    rows.append(_row("naive", 1, naive_panels, total, impl, p))
    load()
    if impl == "diffusers+peft":
        p.pipe.fuse_lora(adapter_names=[f"l{i}" for i in range(len(files))], lora_scale=1.0)
    if p.device.type == "cuda":
        p.pipe.unet.to(memory_format=torch.channels_last)
        p.pipe.vae.to(memory_format=torch.channels_last)
    for b in batches:
        panels(p, b, width, height, steps, 7)  # warm-up at this shape
        p.calls.clear()
        rows.append(_row("fused", b, b, panels(p, b, width, height, steps, 7), impl, p))
    return rows


def _row(loop: str, batch: int, n: int, seconds: float, impl: str, p: Plain) -> dict[str, Any]:
    row = {
        "loop": loop,
        "batch": batch,
        "panels": n,
        "seconds": seconds,
        "s_per_panel": seconds / n,
        "lora_impl": impl,
        "calls": list(p.calls),
    }
    p.calls.clear()
    return row
