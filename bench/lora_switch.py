"""Time LoRA set switching: storyboard's LoraPatcher vs diffusers load_lora_weights/set_adapters/fuse.

Workload (performance.md): an SD1.5-size UNet (real config, random weights) + CLIP-L text encoder,
set A = character LoRA (rank 32) + style LoRA (rank 64), set B = another character (rank 32) + the
same style; kohya's module set (attention/MLP linears + proj_in/out, CLIP attention/MLP).

    python bench/lora_switch.py            # cuda if available, else cpu (slow: full size)
    python bench/lora_switch.py --tiny     # tiny models, seconds on a CPU

Prints one JSON object per line: {"impl", "op", "ms", ...}. The last lines compare the weights each
implementation merged for set A (max abs difference over sampled layers).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storyboard.models.lora import LoraPatcher, read_lora  # noqa: E402
from storyboard.models.lora_formats import clear_cache  # noqa: E402
from storyboard.models.lora_write import write_kohya_lora  # noqa: E402


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t) * 1000.0


def build_models(tiny: bool, device: torch.device, dtype: torch.dtype):  # noqa: ANN201
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if tiny:
        ucfg = dict(
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
        )
        tcfg = CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=49408
        )
    else:
        cfg_dir = Path(__file__).resolve().parents[1] / "storyboard" / "data" / "configs" / "sd15"
        ucfg = json.loads((cfg_dir / "unet" / "config.json").read_text())
        tcfg = CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            vocab_size=49408,
            hidden_act="quick_gelu",
            projection_dim=768,
        )
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: far faster than 860M params on a CPU
        unet: Any = UNet2DConditionModel.from_config(ucfg)
        te: Any = CLIPTextModel(tcfg)
    return unet.to(dtype).eval().requires_grad_(False), te.to(dtype).eval().requires_grad_(False)


def sample_weights(unet, te) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Copies of a few merged weights (cross-attention keys, CLIP q_proj), named without PEFT wrappers."""
    out = {}
    for prefix, model, marker in (("unet.", unet, "attn2.to_k"), ("te.", te, "self_attn.q_proj")):
        for n, p in model.named_parameters():
            if marker in n and "lora_" not in n and n.endswith("weight"):
                out[prefix + n.replace(".base_layer", "")] = p.detach().clone()
    return out


def bench_storyboard(unet, te, sets, device, repeats):  # noqa: ANN001, ANN201
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    set_a, set_b = sets
    emit(impl="storyboard", op="apply_A_cold", ms=round(timed(device, lambda: patcher.apply(set_a)), 3),
         layers=patcher.apply(set_a).applied)  # fmt: skip
    merged_a = sample_weights(unet, te)
    results: dict[str, list[float]] = {"restore": [], "apply_A": [], "switch_A_to_B": [], "switch_B_to_A": []}
    for _ in range(repeats):
        results["restore"].append(timed(device, patcher.restore))
        results["apply_A"].append(timed(device, lambda: patcher.apply(set_a)))
        results["switch_A_to_B"].append(timed(device, lambda: patcher.apply(set_b)))
        results["switch_B_to_A"].append(timed(device, lambda: patcher.apply(set_a)))
    for op, ms in results.items():
        emit(
            impl="storyboard", op=op, ms=round(statistics.median(ms), 3), min_ms=round(min(ms), 3), n=len(ms)
        )
    patcher.release()
    return merged_a


def bench_diffusers(unet, te, files, weights, device, dtype, repeats):  # noqa: ANN001, ANN201
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    from storyboard.prompt.tokenizer import load_clip_tokenizer

    vae: Any = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4)
    vae = vae.to(device, dtype)
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=load_clip_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    char_a, char_b, style = files
    names = ["char_a", "char_b", "style"]
    load_ms = timed(
        device,
        lambda: [pipe.load_lora_weights(str(f), adapter_name=n) for f, n in zip(files, names, strict=True)],
    )
    emit(impl="diffusers", op="load_lora_weights_x3", ms=round(load_ms, 3))
    (wa_char, wa_style), (wb_char, wb_style) = weights

    def fuse_a() -> None:
        pipe.set_adapters(["char_a", "style"], [wa_char, wa_style])
        pipe.fuse_lora(adapter_names=["char_a", "style"], lora_scale=1.0)

    def fuse_b() -> None:
        pipe.set_adapters(["char_b", "style"], [wb_char, wb_style])
        pipe.fuse_lora(adapter_names=["char_b", "style"], lora_scale=1.0)

    def switch(fuse: Callable[[], None]) -> None:
        pipe.unfuse_lora()
        fuse()

    emit(impl="diffusers", op="set_adapters+fuse_A_cold", ms=round(timed(device, fuse_a), 3))
    merged_a = sample_weights(unet, te)
    results: dict[str, list[float]] = {"unfuse": [], "set_adapters+fuse_A": [], "switch_A_to_B": []}
    for _ in range(repeats):
        results["unfuse"].append(timed(device, pipe.unfuse_lora))
        results["set_adapters+fuse_A"].append(timed(device, fuse_a))
        results["switch_A_to_B"].append(timed(device, lambda: switch(fuse_b)))
        pipe.unfuse_lora()
        fuse_a()
    for op, ms in results.items():
        emit(impl="diffusers", op=op, ms=round(statistics.median(ms), 3), min_ms=round(min(ms), 3), n=len(ms))

    def naive() -> None:  # the per-panel loop of performance.md: load, set, (render), unload
        pipe.unfuse_lora()
        pipe.unload_lora_weights()
        for f, n in zip((char_a, style), ("char_a", "style"), strict=True):
            pipe.load_lora_weights(str(f), adapter_name=n)
        pipe.set_adapters(["char_a", "style"], [wa_char, wa_style])

    emit(impl="diffusers", op="naive_unload+load+set_adapters_A", ms=round(timed(device, naive), 3))
    return merged_a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny models (a fast CPU run)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-diffusers", action="store_true", help="skip the diffusers baseline")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    repeats = args.repeats or (5 if args.tiny or device.type == "cpu" else 20)
    t0 = time.perf_counter()
    unet, te = build_models(args.tiny, device, dtype)
    n_params = sum(p.numel() for p in unet.parameters())
    setup_s = round(time.perf_counter() - t0, 2)
    emit(op="setup", what="models", s=setup_s, device=str(device), dtype=str(dtype), unet_params=n_params)
    base_unet = copy.deepcopy(unet) if not args.no_diffusers else None
    base_te = copy.deepcopy(te) if not args.no_diffusers else None
    r_char, r_style = (4, 8) if args.tiny else (32, 64)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = [
            write_kohya_lora(
                Path(tmp) / "char_a.safetensors", unet, te, rank=r_char, alpha=r_char / 2, seed=1
            ),
            write_kohya_lora(
                Path(tmp) / "char_b.safetensors", unet, te, rank=r_char, alpha=r_char / 2, seed=2
            ),
            write_kohya_lora(
                Path(tmp) / "style.safetensors", unet, te, rank=r_style, alpha=r_style / 2, seed=3
            ),
        ]
        emit(op="setup", what="write loras", s=round(time.perf_counter() - t0, 2),
             mb=[round(f.stat().st_size / 1e6, 1) for f in files])  # fmt: skip
        clear_cache()
        t_read = time.perf_counter()
        char_a, char_b, style = (read_lora(f) for f in files)
        emit(impl="storyboard", op="read_lora_x3", ms=round((time.perf_counter() - t_read) * 1000, 3))
        weights = ((1.0, 0.8), (0.9, 0.8))
        sets = (
            [(char_a, weights[0][0], weights[0][0]), (style, weights[0][1], weights[0][1])],
            [(char_b, weights[1][0], weights[1][0]), (style, weights[1][1], weights[1][1])],
        )
        ours = bench_storyboard(unet, te, sets, device, repeats)
        if base_unet is not None:
            try:
                theirs = bench_diffusers(base_unet, base_te, files, weights, device, dtype, repeats)
            except Exception as exc:  # the baseline is informative only; report why it failed
                emit(impl="diffusers", op="error", error=f"{type(exc).__name__}: {exc}")
            else:
                for part in ("unet.", "te."):
                    diffs = [
                        (ours[k].float() - theirs[k].float()).abs().max().item()
                        for k in ours
                        if k in theirs and k.startswith(part)
                    ]
                    emit(op="parity_set_A", component=part[:-1], layers_compared=len(diffs),
                         max_abs_diff=max(diffs) if diffs else None)  # fmt: skip


if __name__ == "__main__":
    main()
