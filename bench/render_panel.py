"""Time one panel of the WebUI tutorial workload through storyboard's render engine, stage by stage.

Workload (performance.md / the demo story): an SD1.5-size checkpoint (shipped sd15 configs, random
weights, written as a WebUI single file), 448x640, DPM++ 2S a Karras, 20 steps, CFG 7, clip skip 2,
2x hires fix with the Latent upscaler at denoising 0.7, a character LoRA (rank 32) at 1.0 and a style
LoRA (rank 64) at 0.6, EasyNegative in the negative prompt; fp16 on CUDA.

    python bench/render_panel.py            # cuda if available (else cpu: very slow at full size)
    python bench/render_panel.py --tiny     # the tiny test model, small size: a CPU smoke run

Prints JSON lines: {"event": "setup", ...}, then per run {"event": "run", "batch", "warm",
"seconds", "per_panel", "stages": {load, lora, encode, sample, hires_upscale, hires_sample, decode}}.
Run 1 includes loading the model (cold); later runs are warm. Batches are forced (no OOM adaptation
is exercised); "nan" reports images that decoded to non-finite values (random weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from storyboard.jobs import PanelJob  # noqa: E402
from storyboard.prompt.extra_networks import LoraUse  # noqa: E402
from storyboard.render.engine import DiffusersRenderer, default_device  # noqa: E402
from storyboard.story.schema import HiresFix, RenderSettings  # noqa: E402

PROMPT = (
    "(masterpiece), (best quality), (ultra-detailed), 1girl, iku nakatani, short black hair, school uniform, "
    "chibi, cute, (full body:1.2), school gate, morning, cherry blossoms, walking"
)
NEGATIVE = (
    "EasyNegative, (worst quality, low quality:1.4), (lip, nose, rouge, lipstick:1.4), (jpeg artifacts:1.4), "
    "dusty sunbeams, trembling, motion lines, motion blur, emphasis lines, text, title, logo, signature"
)


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def write_full_model(root: Path, device: torch.device) -> tuple[str, str]:
    """An SD1.5-size WebUI root: random checkpoint, rank-32 and rank-64 LoRAs, a 768-d embedding."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from storyboard.models.ldm_keys import diffusers_to_ldm_state_dict
    from storyboard.models.load import configs_from_dir, shipped_config_dir
    from storyboard.models.lora_write import write_kohya_lora

    cfgs = configs_from_dir(shipped_config_dir("sd1"), "sd1")
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1B parameters on a GPU takes a second, on a CPU minutes
        unet: Any = UNet2DConditionModel.from_config(cfgs["unet"])
        vae: Any = AutoencoderKL.from_config(cfgs["vae"])
        te: Any = CLIPTextModel(CLIPTextConfig.from_dict(cfgs["text_encoder"]))
    # Random eps outputs of unit size blow the latent up over 40 steps; a small output layer keeps the
    # numbers in fp16 range so the timing is that of a normal render (no NaN fallbacks).
    unet.conv_out.weight.data.mul_(0.02)
    unet.conv_out.bias.data.zero_()
    for m in (unet, vae, te):
        m.eval().requires_grad_(False)
    ckpt_dir = root / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    state = {
        k: v.to("cpu", torch.float16).contiguous()
        for k, v in diffusers_to_ldm_state_dict(unet, vae, te).items()
    }
    save_file(state, str(ckpt_dir / "bench-sd15.safetensors"))
    del state
    lora_dir = root / "models" / "Lora"
    lora_dir.mkdir(parents=True)
    cpu_unet, cpu_te = unet.to("cpu"), te.to("cpu")
    # Small factors: random deltas at the default size push a random model to NaN.
    write_kohya_lora(lora_dir / "character.safetensors", cpu_unet, cpu_te, rank=32, seed=1, scale=0.01)
    write_kohya_lora(lora_dir / "style.safetensors", cpu_unet, cpu_te, rank=64, seed=2, scale=0.01)
    # A second character (bench/speed.py's story has two), same rank as the first.
    write_kohya_lora(lora_dir / "character2.safetensors", cpu_unet, cpu_te, rank=32, seed=4, scale=0.01)
    emb_dir = root / "embeddings"
    emb_dir.mkdir()
    gen = torch.Generator().manual_seed(3)
    save_file(
        {"emb_params": torch.randn(8, 768, generator=gen) * 0.01}, str(emb_dir / "EasyNegative.safetensors")
    )
    del unet, vae, te
    return "bench-sd15", "character"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random model and small size (CPU smoke run)")
    ap.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    ap.add_argument("--repeats", type=int, default=1, help="warm runs per batch size")
    ap.add_argument("--size", default=None, help="first-pass WIDTHxHEIGHT (default 448x640; tiny 64x96)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default 20; tiny 6)")
    ap.add_argument("--sampler", default="DPM++ 2S a Karras", help="WebUI sampler name (default: the seed's)")
    ap.add_argument(
        "--hires-steps", type=int, default=0, help="hires steps, 0 = same as steps (WebUI); 14 = workload A"
    )
    ap.add_argument(
        "--check-repeat", action="store_true", help="render the first batch twice and report if bytes differ"
    )
    args = ap.parse_args()
    device = torch.device(args.device) if args.device else default_device()
    batches = [int(b) for b in args.batches.split(",")]
    if args.tiny and device.type == "cpu":
        # Tiny ops gain nothing from threads, and on a busy CPU OpenMP barriers stall for seconds.
        torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="storyboard-bench-") as tmp:
        root = Path(tmp) / "webui"
        t0 = time.perf_counter()
        if args.tiny:
            from storyboard.models.tiny import write_tiny_model

            write_tiny_model(root)
            model, character, style = "tiny-sd", "tiny_character_v1", "tiny-style"
            width, height, steps = 64, 96, 6
        else:
            model, _ = write_full_model(root, device)
            character, style = "character", "style"
            width, height, steps = 448, 640, 20
        emit(
            event="setup",
            device=str(device),
            tiny=args.tiny,
            write_model_s=round(time.perf_counter() - t0, 3),
        )

        settings = RenderSettings(
            model=model,
            sampler=args.sampler,
            steps=steps,
            cfg_scale=7,
            width=width,
            height=height,
            clip_skip=2,
            hires=HiresFix(scale=2, upscaler="Latent", denoising_strength=0.7, steps=args.hires_steps),
            webui_root=root,
        )
        loras = (LoraUse(character, 1.0, 1.0), LoraUse(style, 0.6, 0.6))
        tags = f" <lora:{character}:1> <lora:{style}:0.6>"

        def jobs(n: int, first_seed: int) -> list[PanelJob]:
            return [
                PanelJob(f"p{i}", 1, i, PROMPT + tags, NEGATIVE, loras, first_seed + i, settings)
                for i in range(n)
            ]

        seed = 3447412781 - 100
        runs = [(batches[0], False)] + [(b, True) for b in batches for _ in range(args.repeats)]
        renderer: DiffusersRenderer | None = None
        for batch, warm in runs:
            if renderer is None:
                renderer = DiffusersRenderer(
                    Path(tmp), quiet=True, device=device, batch_size=batch, profile=True
                )
            renderer.batch_size = batch
            renderer.stage_seconds = {}
            todo = jobs(batch, seed)
            seed += batch
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = time.perf_counter()
            out = list(renderer.render(todo))
            seconds = time.perf_counter() - t
            nan = sum(1 for r in out if r.image.getbbox() is None)  # all black: a NaN decode
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            emit(
                event="run",
                batch=batch,
                warm=warm,
                size=[width, height],
                output=list(out[0].image.size),
                seconds=round(seconds, 3),
                per_panel=round(seconds / batch, 3),
                stages={k: round(v, 3) for k, v in renderer.stage_seconds.items()},
                peak_gib=None if peak is None else round(peak, 2),
                nan=nan,
            )
        if args.check_repeat and renderer is not None:
            from storyboard.app.build import png_bytes

            a = [png_bytes(r.image, r.infotext) for r in renderer.render(jobs(2, 7))]
            b = [png_bytes(r.image, r.infotext) for r in renderer.render(jobs(2, 7))]
            solo = [png_bytes(r.image, r.infotext) for r in renderer.render(jobs(1, 7))]
            emit(event="repeat", identical=a == b, batch_vs_alone_identical=a[0] == solo[0])


if __name__ == "__main__":
    main()
