"""bench/speed.py's SDXL workload (issue 18): storyboard against plain diffusers' SDXL pipeline.

The workload is how Illustrious/NoobAI users render: Euler a, 28 steps, CFG 5.5, a 1024x1024 pixel
budget, 1.5x latent hires at 0.5 with 14 hires steps, two LoRAs (a character at rank 32 and a style
at rank 64, both kohya files with lora_te1_/lora_te2_/LDM-named UNet keys, as SDXL LoRAs ship).

- storyboard: a 12-panel story with one character, built through the app's ``build`` at batch 1 and
  at the engine's batch, like workloads A and B (frame-shaped panels at the same pixel budget).
- plain diffusers: ``StableDiffusionXLPipeline`` (EulerAncestralDiscreteScheduler) plus
  ``StableDiffusionXLImg2ImgPipeline`` for the hires pass, LoRAs fused once, at each batch size.
  LoRAs go through diffusers' ``load_lora_weights``/``fuse_lora`` when PEFT is installed, else the
  hand merge of bench/plain_loops.py (``lora_impl`` says which), as the SD1.5 rows do.

``--tiny`` uses storyboard's tiny random-weight SDXL model at 64x96 on a CPU; the real size writes
random SDXL-base-size weights (about 7 GB in fp16) into the temporary WebUI folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

PANELS = 12
FULL = {"steps": 28, "hr_steps": 14, "size": (1024, 1024)}
TINY = {"steps": 4, "hr_steps": 2, "size": (64, 96)}
DENOISE = 0.5  # img2img at 0.5 over `steps` runs hr_steps real steps, as WebUI's hires steps do


def write_sdxl_models(root: Path, tiny: bool, device: torch.device) -> dict[str, str]:
    """An SDXL WebUI root with the checkpoint and two LoRAs; returns the names the story uses."""
    from storyboard.models.lora_write import write_kohya_lora

    lora_dir = root / "models" / "Lora"
    if tiny:
        # via tiny.py, which re-exports it: importing tiny_sdxl first is a circular import
        from storyboard.models.tiny import write_tiny_sdxl_checkpoint

        m = write_tiny_sdxl_checkpoint(root / "models" / "Stable-diffusion" / "bench-sdxl.safetensors")
        unet, te, te2, ranks, scale = m.unet, m.text_encoder, m.text_encoder_2, (4, 8), 0.05
    else:
        unet, te, te2 = _write_full_sdxl(root, device)
        # Small factors: random deltas at the default size push a random model to NaN in fp16.
        ranks, scale = (32, 64), 0.01
    for name, rank, seed in (("xl-character", ranks[0], 1), ("xl-style", ranks[1], 2)):
        write_kohya_lora(
            lora_dir / f"{name}.safetensors",
            unet,
            te,
            text_encoder_2=te2,
            text_encoder_prefix="lora_te1",
            unet_layout="ldm",
            rank=rank,
            seed=seed,
            scale=scale,
            base_model_version="sdxl_base_v1-0",
        )
    return {"model": "bench-sdxl", "char": "xl-character", "style": "xl-style"}


def _write_full_sdxl(root: Path, device: torch.device) -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from storyboard.models.checkpoint_file import configs_from_dir, shipped_config_dir
    from storyboard.models.ldm_keys import sdxl_to_ldm_state_dict

    cfgs = configs_from_dir(shipped_config_dir("sdxl"), "sdxl")
    torch.manual_seed(0)
    with torch.device(device):  # initialising 3.5B parameters on a GPU takes seconds, on a CPU many minutes
        unet: Any = UNet2DConditionModel.from_config(cfgs["unet"])
        vae: Any = AutoencoderKL.from_config(cfgs["vae"])
        te: Any = CLIPTextModel(CLIPTextConfig.from_dict(cfgs["text_encoder"]))
        te2: Any = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(cfgs["text_encoder_2"]))
    # As in bench/render_panel.py: a small output layer keeps a random model's latents in fp16 range.
    unet.conv_out.weight.data.mul_(0.02)
    unet.conv_out.bias.data.zero_()
    mods = [m.eval().requires_grad_(False).half() for m in (unet, vae, te, te2)]
    ckpt_dir = root / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.to("cpu").contiguous() for k, v in sdxl_to_ldm_state_dict(*mods).items()}
    save_file(state, str(ckpt_dir / "bench-sdxl.safetensors"))
    del state, vae
    # LoRA factors are drawn on the CPU from the module shapes; float32 there keeps that exact.
    return unet.to("cpu", torch.float32), te.to("cpu", torch.float32), te2.to("cpu", torch.float32)


def story_text(root: Path, names: dict[str, str], tiny: bool) -> str:
    cfg = TINY if tiny else FULL
    w, h = cfg["size"]
    rows = [
        f"      - {{id: x{i + 1:02d}, scene: 'garden, morning, view {i}', characters: [ann]}}"
        for i in range(PANELS)
    ]
    pages = "\n".join("  - panels:\n" + "\n".join(rows[i : i + 3]) for i in range(0, PANELS, 3))
    return f"""title: Speed SDXL
characters:
  ann: {{name: Ann, lora: {names["char"]}, weight: 1, triggers: [1girl, ann]}}
style:
  loras: [{{lora: {names["style"]}, weight: 0.6}}]
  prompt: watercolor, pastel colors
render:
  preset: illustrious
  model: {names["model"]}
  sampler: Euler a
  steps: {cfg["steps"]}
  cfg_scale: 5.5
  width: {w}
  height: {h}
  hires: {{scale: 1.5, upscaler: Latent, denoising_strength: {DENOISE}, steps: {cfg["hr_steps"]}}}
  webui_root: {json.dumps(str(root))}
pages:
{pages}
"""


def run_storyboard_sdxl(
    args: argparse.Namespace, tmp: Path, root: Path, names: dict[str, str], device: Any, meter: Any
) -> list[dict[str, Any]]:
    from flops import calls_flops, vae_decode_flops

    from storyboard.app.build import build
    from storyboard.render.engine import DiffusersRenderer
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    story = tmp / "speed-SDXL.yaml"
    story.write_text(story_text(root, names, args.tiny))
    loaded = load_story(story)
    jobs = plan(loaded)
    renderer = DiffusersRenderer(loaded.base_dir, quiet=True, device=device)
    renderer.check(jobs)
    list(renderer.render(jobs[:1]))  # load the model: the warm rows below exclude it
    comps = renderer.model.components
    w, h = jobs[0].settings.output_size
    vae_tflop = vae_decode_flops(comps.vae.config, h // 8, w // 8) / 1e12
    rows = []
    for label, batch in (("batch_1", 1), ("engine", args.engine_batch)):
        renderer.batch_size = batch
        warm = [j.__class__(**{**j.__dict__, "seed": j.seed + 10_000}) for j in jobs[: batch or 1]]
        list(renderer.render(warm))  # this shape's first call
        t0 = meter.start()
        report = build(loaded, tmp / f"out-SDXL-{label}", renderer, layout=False)
        meter.sync()
        seconds = time.perf_counter() - t0
        tflop = calls_flops(comps.unet.config, meter.calls) / 1e12 + PANELS * vae_tflop
        rows.append(
            {
                "workload": "SDXL",
                "batch": label,
                "panels_per_call": max(c[0] for c in meter.calls) // 2,
                "panels": PANELS,
                "seconds": seconds,
                "s_per_panel": seconds / PANELS,
                "rendered": len(report.rendered),
                "unet_calls": len(meter.calls),
                "tflop": tflop,
                "tflops_per_s": tflop / seconds,
                "vae_decode_tflop": vae_tflop,
                **meter.peak(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    del renderer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows
