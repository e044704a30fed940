"""The SDXL workload in plain diffusers, LoRAs fused once: the comparison rows of bench/speed_sdxl.py.

``StableDiffusionXLPipeline`` base pass (EulerAncestralDiscreteScheduler = Euler a), latent 1.5x
upscale, ``StableDiffusionXLImg2ImgPipeline`` at strength 0.5, VAE decode; panels batched. The
modules are a fresh load of the same checkpoint file storyboard renders, so diffusers' LoRA code
never touches storyboard's patched weights. LoRA loading and fusing is bench/plain_loops.py's
(diffusers+PEFT when installed, else a hand merge of the kohya files).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from plain_loops import Plain, lora_ops, sync

CFG = 5.5


def build_plain_sdxl(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> Plain:
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )
    from diffusers.utils import logging as diffusers_logging

    from storyboard.models.load import load_pipeline_components

    comps = load_pipeline_components(checkpoint, device=device, dtype=dtype)
    diffusers_logging.set_verbosity_error()
    sched = EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    # Both pipelines share one set of modules: the hires pass reuses the first pass's weights.
    shared: dict[str, Any] = dict(
        vae=comps.vae,
        text_encoder=comps.text_encoder,
        text_encoder_2=comps.text_encoder_2,
        tokenizer=None,
        tokenizer_2=None,
        unet=comps.unet,
        scheduler=sched,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    pipe = StableDiffusionXLPipeline(**shared)
    pipe.set_progress_bar_config(disable=True)
    i2i = StableDiffusionXLImg2ImgPipeline(**shared, requires_aesthetics_score=False)
    i2i.set_progress_bar_config(disable=True)
    calls: list[tuple[int, int, int, int]] = []

    def record(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x, c = args[0], kwargs["encoder_hidden_states"]
        calls.append((int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]), int(c.shape[1])))

    comps.unet.register_forward_pre_hook(record, with_kwargs=True)
    return Plain(pipe, i2i, device, dtype, calls)


def embeds(p: Plain, n: int, seed: int) -> tuple[Any, Any]:
    """(prompt_embeds, pooled) as SDXL builds them: both encoders' penultimate layers concatenated."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, p.pipe.text_encoder.config.vocab_size, (n, 77), generator=g).to(p.device)
    with torch.no_grad():
        h1 = p.pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        out2 = p.pipe.text_encoder_2(ids, output_hidden_states=True)
    return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2.text_embeds


def panels(p: Plain, n: int, width: int, height: int, steps: int, seed: int) -> float:
    """Render n panels in one batch (base, latent 1.5x, img2img 0.5, decode); returns seconds."""
    (pe, pooled), (ne, npooled) = embeds(p, n, seed), embeds(p, n, seed + 1)
    cond = {
        "prompt_embeds": pe,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": ne,
        "negative_pooled_prompt_embeds": npooled,
        "guidance_scale": CFG,
        "output_type": "latent",
    }
    g = torch.Generator(p.device).manual_seed(seed)
    sync(p.device)
    t0 = time.perf_counter()
    lat = p.pipe(width=width, height=height, num_inference_steps=steps, generator=g, **cond).images
    up = torch.nn.functional.interpolate(lat, scale_factor=1.5, mode="bilinear")
    lat2 = p.i2i(image=up, strength=0.5, num_inference_steps=steps, generator=g, **cond).images
    with torch.no_grad():
        p.pipe.vae.decode(lat2.to(p.pipe.vae.dtype) / p.pipe.vae.config.scaling_factor)
    sync(p.device)
    return time.perf_counter() - t0


def run_plain_sdxl(
    p: Plain,
    files: list[Path],
    weights: list[float],
    *,
    width: int,
    height: int,
    steps: int,
    batches: list[int],
) -> list[dict[str, Any]]:
    """The fused loop at each batch size; one row each, with its UNet calls."""
    load, _unload, impl = lora_ops(p, files, weights)
    load()
    if impl == "diffusers+peft":
        p.pipe.fuse_lora(adapter_names=[f"l{i}" for i in range(len(files))], lora_scale=1.0)
    if p.device.type == "cuda":
        p.pipe.unet.to(memory_format=torch.channels_last)
        p.pipe.vae.to(memory_format=torch.channels_last)
    rows = []
    for b in batches:
        panels(p, b, width, height, steps, 7)  # warm-up at this shape
        p.calls.clear()
        seconds = panels(p, b, width, height, steps, 7)
        rows.append(
            {
                "workload": "SDXL",
                "loop": "fused",
                "batch": b,
                "panels": b,
                "seconds": seconds,
                "s_per_panel": seconds / b,
                "lora_impl": impl,
                "calls": list(p.calls),
            }
        )
        p.calls.clear()
    return rows
