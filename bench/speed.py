"""Issue 16's benchmark: storyboard against plain diffusers, in one process, on the same weights.

    python bench/speed.py                      # the real size (SD1.5-size random weights), on CUDA
    python bench/speed.py --tiny               # the tiny model on a CPU in seconds (tests run this)
    python bench/speed.py --json out.json      # where the figures go (default speed-results.json)

Rows (docs/speed.md says what each means):
- storyboard: a 12-panel story (two characters, each with a LoRA, and a style LoRA), workloads A
  (DPM++ 2M Karras, 20 steps, 14 hires steps) and B (DPM++ 2S a Karras, 20 steps, hires steps 0 =
  20), 448x640 + 2x latent hires, at batch 1 and at the engine's batch; built through the app's
  ``build`` (PNGs and manifest written) into a fresh output folder, so nothing comes from a cache.
- plain diffusers, workload A: the naive loop and the fused-and-batched loop (bench/plain_loops.py).
- candidates: one panel's ``--candidates 4`` of workload A.
- lora_switch_ms: switching the patched set between (character 1 + style) and (character 2 + style).
- cold_start: a new process (the CLI's ``build``) to the first panel PNG, empty file-hash cache;
  low_memory: the same with ``render.low_memory: true``.
- workload SDXL (issue 18, bench/speed_sdxl.py): 1024x1024 budget, 1.5x hires, two LoRAs, storyboard
  rows beside plain diffusers' StableDiffusionXLPipeline with the LoRAs fused.
The SD1.5 rows (and candidates, switch, cold start) run when --workloads names A or B.
Every storyboard row has s/panel, achieved TFLOP/s (UNet FLOPs of the calls actually made, counted by
bench/flops.py, plus the VAE decodes), and peak memory: CUDA allocated, or on a CPU the process's
peak RSS so far (it only grows), which is why the low-memory figure comes from its own process.
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

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PANELS = 12
WORKLOADS = {  # sampler, steps, hires steps (tiny: steps, hires steps)
    "A": ("DPM++ 2M Karras", (20, 14), (4, 3)),
    "B": ("DPM++ 2S a Karras", (20, 0), (4, 0)),
}


def story_text(
    root: Path,
    names: dict[str, str],
    workload: str,
    args: argparse.Namespace,
    *,
    panels: int = PANELS,
    low_memory: bool = False,
) -> str:
    sampler, full, small = WORKLOADS[workload]
    steps, hr_steps = small if args.tiny else full
    w, h = args.size
    rows = []
    for i in range(panels):
        who = "ann" if i % 2 == 0 else "ben"
        rows.append(f"      - {{id: p{i + 1:02d}, scene: 'garden, morning, view {i}', characters: [{who}]}}")
    pages = "\n".join("  - panels:\n" + "\n".join(rows[i : i + 3]) for i in range(0, len(rows), 3))
    return f"""title: Speed {workload}
characters:
  ann: {{name: Ann, lora: {names["char1"]}, weight: 1, triggers: [1girl, ann]}}
  ben: {{name: Ben, lora: {names["char2"]}, weight: 1, triggers: [1boy, ben]}}
style:
  loras: [{{lora: {names["style"]}, weight: 0.6}}]
  prompt: chibi, cute
render:
  model: {names["model"]}
  sampler: {sampler}
  steps: {steps}
  cfg_scale: 7
  width: {w}
  height: {h}
  clip_skip: 2
  hires: {{scale: 2, upscaler: Latent, denoising_strength: 0.7, steps: {hr_steps}}}
  quality: (masterpiece), (best quality)
  negative: EasyNegative, (worst quality, low quality:1.4)
  low_memory: {str(low_memory).lower()}
  webui_root: {json.dumps(str(root))}
pages:
{pages}
"""


def write_models(root: Path, tiny: bool, device: Any) -> dict[str, str]:
    """A WebUI root with the checkpoint and three LoRAs; returns the names the story uses."""
    from storyboard.models.load import load_pipeline_components
    from storyboard.models.lora_write import write_kohya_lora

    if not tiny:
        from render_panel import write_full_model  # bench/render_panel.py: the SD1.5-size files

        write_full_model(root, device)
        return {"model": "bench-sd15", "char1": "character", "char2": "character2", "style": "style"}
    from storyboard.models.tiny import write_tiny_model

    tm = write_tiny_model(root)
    comps = load_pipeline_components(tm.checkpoint)
    write_kohya_lora(
        root / "models" / "Lora" / "tiny-character2.safetensors",
        comps.unet,
        comps.text_encoder,
        rank=4,
        seed=12,
    )
    return {"model": "tiny-sd", "char1": "tiny-character", "char2": "tiny-character2", "style": "tiny-style"}


class Meter:
    """UNet calls (for FLOPs) and peak memory of one measured row."""

    def __init__(self, device: Any) -> None:
        import torch

        from storyboard.render.denoiser import CompVisDenoiser

        self.torch, self.device = torch, device
        self.calls: list[tuple[int, int, int, int]] = []
        orig = CompVisDenoiser._unet

        def recorded(den: Any, x: Any, t: Any, cond: Any, *rest: Any) -> Any:
            self.calls.append((int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]), int(cond.shape[1])))
            return orig(den, x, t, cond, *rest)

        CompVisDenoiser._unet = recorded  # type: ignore[method-assign]  # a bench-only probe

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def start(self) -> float:
        self.calls = []
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.sync()
        return time.perf_counter()

    def peak(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            return {
                "peak_mem_gib": self.torch.cuda.max_memory_allocated(self.device) / 2**30,
                "mem_kind": "cuda_allocated",
            }
        import resource

        return {
            "peak_mem_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "mem_kind": "cpu_rss_process_so_far",
        }


def flop_figures(
    calls: list[tuple[int, int, int, int]], decodes: int, seconds: float, unet_cfg: Any, vae_tflop: float
) -> dict[str, Any]:
    from flops import calls_flops

    tflop = calls_flops(unet_cfg, calls) / 1e12 + decodes * vae_tflop
    return {"unet_calls": len(calls), "tflop": tflop, "tflops_per_s": tflop / seconds}


def run_storyboard(
    args: argparse.Namespace,
    tmp: Path,
    root: Path,
    names: dict[str, str],
    device: Any,
    result: dict[str, Any],
) -> Any:
    from flops import vae_decode_flops

    from storyboard.app.build import build, render_candidates
    from storyboard.models.lora import read_lora
    from storyboard.render.engine import DiffusersRenderer
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    meter = Meter(device)
    renderer: DiffusersRenderer | None = None
    rows = result["storyboard"]
    for wl in args.workloads:
        story = tmp / f"speed-{wl}.yaml"
        story.write_text(story_text(root, names, wl, args))
        loaded = load_story(story)
        jobs = plan(loaded)
        if renderer is None:
            renderer = DiffusersRenderer(loaded.base_dir, quiet=True, device=device)
            renderer.check(jobs)
            list(renderer.render(jobs[:1]))  # load the model: the warm rows below exclude it
            cfg = renderer.model.components.unet.config
            w, h = jobs[0].settings.output_size
            vae_tflop = vae_decode_flops(renderer.model.components.vae.config, h // 8, w // 8) / 1e12
            result["flops"] = {"vae_decode_tflop": vae_tflop}
        for label, batch in (("batch_1", 1), ("engine", args.engine_batch)):
            renderer.batch_size = batch
            warm = [j.__class__(**{**j.__dict__, "seed": j.seed + 10_000}) for j in jobs[: batch or 1]]
            list(renderer.render(warm))  # this shape's first call (kernel choice, graph capture)
            t0 = meter.start()
            report = build(loaded, tmp / f"out-{wl}-{label}", renderer, layout=False)
            meter.sync()
            seconds = time.perf_counter() - t0
            biggest = max(c[0] for c in meter.calls) // 2
            rows.append(
                {
                    "workload": wl,
                    "batch": label,
                    "panels_per_call": biggest,
                    "panels": PANELS,
                    "seconds": seconds,
                    "s_per_panel": seconds / PANELS,
                    "rendered": len(report.rendered),
                    **flop_figures(meter.calls, PANELS, seconds, cfg, vae_tflop),
                    **meter.peak(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    assert renderer is not None
    # --candidates 4 of workload A's first panel, as `storyboard render -k 4` runs it.
    renderer.batch_size = args.engine_batch
    loaded = load_story(tmp / f"speed-{args.workloads[0]}.yaml")
    t0 = meter.start()
    render_candidates(loaded, tmp / "out-candidates", renderer, "p01", [901, 902, 903, 904])
    meter.sync()
    seconds = time.perf_counter() - t0
    result["candidates"] = {
        "k": 4,
        "seconds": seconds,
        **flop_figures(meter.calls, 4, seconds, cfg, vae_tflop),
        **meter.peak(),
    }
    # LoRA set switch: (character 1 + style) <-> (character 2 + style), as between two panels.
    lora = root / "models" / "Lora"
    files = {k: next(lora.glob(f"{names[k]}.safetensors")) for k in ("char1", "char2", "style")}
    sets = [
        [(read_lora(files[c]), 1.0, 1.0), (read_lora(files["style"]), 0.6, 0.6)] for c in ("char1", "char2")
    ]
    patcher = renderer.model.patcher
    times = []
    for i in range(2 + args.switches):
        t0 = meter.start()
        patcher.apply(sets[i % 2])
        meter.sync()
        if i >= 2:  # the first two prepare each set once (a story does that once per set)
            times.append((time.perf_counter() - t0) * 1000)
    patcher.restore()
    result["lora_switch_ms"] = sorted(times)[len(times) // 2]
    return renderer


def run_plain_rows(
    args: argparse.Namespace, root: Path, names: dict[str, str], device: Any, result: dict[str, Any]
) -> None:
    import torch
    from flops import calls_flops
    from plain_loops import build_plain, run_plain

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    ckpt = root / "models" / "Stable-diffusion" / f"{names['model']}.safetensors"
    p = build_plain(ckpt, device, dtype)
    lora = root / "models" / "Lora"
    files = [lora / f"{names['char1']}.safetensors", lora / f"{names['style']}.safetensors"]
    w, h = args.size
    steps = WORKLOADS["A"][2][0] if args.tiny else 20
    rows = run_plain(
        p,
        files,
        [1.0, 0.6],
        width=w,
        height=h,
        steps=steps,
        naive_panels=args.naive_panels,
        batches=args.plain_batches,
    )
    vae_tflop = result["flops"]["vae_decode_tflop"]
    for row in rows:
        calls = row.pop("calls")
        tflop = calls_flops(p.pipe.unet.config, calls) / 1e12 + row["panels"] * vae_tflop
        row.update(workload="A", unet_calls=len(calls), tflop=tflop, tflops_per_s=tflop / row["seconds"])
        result["plain_diffusers"].append(row)
        print(json.dumps(row), flush=True)
    del p
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_sdxl_rows(args: argparse.Namespace, tmp: Path, device: Any, result: dict[str, Any]) -> None:
    """Workload SDXL: storyboard's rows, then plain diffusers' fused SDXL rows on the same files."""
    import torch
    from flops import calls_flops
    from plain_sdxl import build_plain_sdxl, run_plain_sdxl
    from speed_sdxl import FULL, TINY, run_storyboard_sdxl, write_sdxl_models

    root = tmp / "webui-sdxl"
    names = write_sdxl_models(root, args.tiny, device)
    rows = run_storyboard_sdxl(args, tmp, root, names, device, Meter(device))
    result["storyboard"] += rows
    vae_tflop = rows[0]["vae_decode_tflop"]
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    p = build_plain_sdxl(
        root / "models" / "Stable-diffusion" / f"{names['model']}.safetensors", device, dtype
    )
    lora = root / "models" / "Lora"
    cfg = TINY if args.tiny else FULL
    w, h = cfg["size"]
    files = [lora / f"{names['char']}.safetensors", lora / f"{names['style']}.safetensors"]
    for row in run_plain_sdxl(
        p, files, [1.0, 0.6], width=w, height=h, steps=cfg["steps"], batches=args.plain_batches
    ):
        calls = row.pop("calls")
        tflop = calls_flops(p.pipe.unet.config, calls) / 1e12 + row["panels"] * vae_tflop
        row.update(unet_calls=len(calls), tflop=tflop, tflops_per_s=tflop / row["seconds"])
        result["plain_diffusers"].append(row)
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model, 64x96, few steps (a CPU smoke run)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: best available)")
    ap.add_argument("--json", type=Path, default=Path("speed-results.json"), help="where the figures go")
    ap.add_argument("--workloads", default="A,B,SDXL", help="any of A, B, SDXL")
    ap.add_argument(
        "--engine-batch",
        type=int,
        default=None,
        help="batch for the 'engine' rows (default: what the engine picks; --tiny: 4)",
    )
    ap.add_argument(
        "--plain-batches", default=None, help="fused plain-diffusers batches (default 1,4,8; tiny 1,2)"
    )
    ap.add_argument("--naive-panels", type=int, default=None, help="naive-loop panels (default 3; tiny 2)")
    ap.add_argument("--size", default=None, help="first-pass WIDTHxHEIGHT (default 448x640; tiny 64x96)")
    ap.add_argument("--switches", type=int, default=10, help="timed LoRA set switches")
    args = ap.parse_args()
    args.workloads = wanted = args.workloads.split(",")
    unknown = set(wanted) - {*WORKLOADS, "SDXL"}
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from A, B, SDXL")
    if args.tiny and args.engine_batch is None:
        args.engine_batch = 4  # a CPU engine picks 1; 4 exercises the batched path
    args.plain_batches = [
        int(b) for b in (args.plain_batches or ("1,2" if args.tiny else "1,4,8")).split(",")
    ]
    args.naive_panels = args.naive_panels or (2 if args.tiny else 3)
    args.size = tuple(int(v) for v in (args.size or ("64x96" if args.tiny else "448x640")).split("x"))

    import platform

    import torch

    from storyboard.render.engine import default_device

    device = torch.device(args.device) if args.device else default_device()
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny ops gain nothing from threads (see bench/render_panel.py)
    result: dict[str, Any] = {
        "machine": {
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__,
            "python": platform.python_version(),
        },
        "tiny": args.tiny,
        "storyboard": [],
        "plain_diffusers": [],
    }
    with tempfile.TemporaryDirectory(prefix="storyboard-speed-") as t:
        tmp = Path(t)
        root = tmp / "webui"
        sd15 = [w for w in args.workloads if w in WORKLOADS]
        if sd15:
            args.workloads = sd15
            names = write_models(root, args.tiny, device)
            run_storyboard(args, tmp, root, names, device, result)
            run_plain_rows(args, root, names, device, result)
            from cold_start import cold_start

            for key, low in (("cold_start", False), ("low_memory", True)):
                text = story_text(root, names, "A", args, panels=1, low_memory=low)
                result[key] = cold_start(tmp, text, low)
        if "SDXL" in wanted:
            run_sdxl_rows(args, tmp, device, result)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("candidates", "lora_switch_ms", "cold_start", "low_memory")
    print(json.dumps({k: result[k] for k in keys if k in result}))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
