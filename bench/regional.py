"""Regional rendering: bleed, render time, and the per-step cost of switching LoRA sets.

    python bench/regional.py --tiny              # the tiny random model, seconds on a CPU
    python bench/regional.py --tiny --seeds 1,2,3,4,5

Prints one JSON object per line:

- ``bleed``: a two-character panel rendered, then again with character A's LoRA weight 0; the bleed
  ratio is the share of the pixel change (squared difference, summed) that falls outside A's region
  dilated by 1/16 of the panel width. Regional rendering against today's global merge, same seeds.
- ``render_time``: seconds per panel, one character vs two characters global vs two regional.
- ``switch``: ms per LoRA-set switch between the panel's cached sets (what regional sampling pays
  R+1 times per model call), against ms per UNet evaluation at the panel's latent size.
- ``unmerged``: the alternative of keeping base weights and adding each region's low-rank LoRA
  branch inside the Linear layers, one batched UNet call for all R+1 conditionings (per-sample
  factors): ms per step both ways, and the largest difference from the merged result. Only plain
  Linear LoRA modules are hooked (``modules_not_linear_lowrank`` counts the rest, e.g. conv
  layers), so unless that count is 0 the unmerged figure does less work than the merged one and
  its result differs: it is a lower bound on that approach's cost, not a like-for-like result.

On a CPU these are CPU figures; GPU figures need a GPU run of the same script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storyboard.jobs import (
    Box,  # noqa: E402
    PanelJob,  # noqa: E402
)
from storyboard.render.engine import DiffusersRenderer  # noqa: E402
from storyboard.render.regions import bleed_ratio  # noqa: E402
from storyboard.story.load import load_story_text  # noqa: E402
from storyboard.story.plan import plan  # noqa: E402

STORY = """\
title: Bleed
characters:
  a: {{lora: tiny_character_v1, weight: {weight}, triggers: [1girl, red hair]}}
  b: {{lora: tiny-style, weight: 0.8, triggers: [1boy, blue jacket]}}
render:
  model: tiny-sd
  sampler: {sampler}
  steps: {steps}
  cfg_scale: 7
  width: {width}
  height: {height}
  clip_skip: 2
  noise_source: cpu
  webui_root: {root}
{hires}
pages:
  - panels:
      - id: two
        scene: garden, two people
        characters: [a, b]
        seed: {seed}
        regions: {regions}
      - id: one
        scene: garden
        characters: [a]
        seed: {seed}
"""


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def story_jobs(root: Path, seed: int, *, weight: float, regions: str, **kw: Any) -> dict[str, PanelJob]:
    # 128 px: at 64 px the tiny VAE decoder alone spreads a latent change past 1/16 of the width.
    opts: dict[str, Any] = {
        "sampler": "DPM++ 2M Karras",
        "steps": 8,
        "width": 128,
        "height": 128,
        "hires": "",
    }
    opts.update(kw)
    text = STORY.format(root=root, seed=seed, weight=weight, regions=regions, **opts)
    return {j.panel_id: j for j in plan(load_story_text(text, root / "bleed.yaml"))}


def pixels(renderer: DiffusersRenderer, job: PanelJob) -> np.ndarray:
    [out] = list(renderer.render([job]))
    return np.asarray(out.image, dtype=np.float64)


def bleed(renderer: DiffusersRenderer, root: Path, seeds: list[int], **kw: Any) -> list[dict[str, float]]:
    rows = []
    for seed in seeds:
        row: dict[str, float] = {"seed": seed}
        for mode, regions in (("regional", "columns 1,1"), ("global", "none")):
            full = story_jobs(root, seed, weight=1.0, regions=regions, **kw)["two"]
            zero = story_jobs(root, seed, weight=0.0, regions=regions, **kw)["two"]
            a_box: Box = (0.0, 0.0, 0.5, 1.0)  # a is listed first: the left column
            row[mode] = bleed_ratio(pixels(renderer, full), pixels(renderer, zero), a_box)
        rows.append(row)
    return rows


def timed_render(renderer: DiffusersRenderer, job: PanelJob, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        list(renderer.render([job]))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def switch_cost(renderer: DiffusersRenderer, job: PanelJob, repeats: int) -> dict[str, float]:
    """ms per switch between the panel's prepared LoRA sets, and ms per UNet evaluation."""
    from storyboard.render.conditioning import encode_regional, prompt_encoder

    model = renderer.model
    rj = renderer.resolve(job)
    enc = prompt_encoder(model.components, rj.models.embeddings, rj.settings.clip_skip)
    rc = encode_regional(rj, renderer.resolver, model.patcher, enc, renderer.device, needs_shared=False)
    keys: list[Any] = [None, *(k for k, _, _ in rc.regions)]
    for k in keys:  # prepare every set once
        rc.switch(k)
    t = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for k in keys:
            rc.switch(k)
            n += 1
    switch_ms = (time.perf_counter() - t) * 1000 / n
    rc.switch(None)
    den = model.denoiser
    s = rj.settings
    x = torch.randn(1, 4, s.height // 8, s.width // 8, device=renderer.device)
    cond = rc.regions[0][1][0][1].hidden[None]
    sigma = torch.tensor([5.0], device=renderer.device)
    with torch.no_grad():
        den(x, sigma, cond)
        t = time.perf_counter()
        for _ in range(repeats):
            den(x, sigma, cond)
    unet_ms = (time.perf_counter() - t) * 1000 / repeats
    return {"switch_ms": switch_ms, "unet_eval_ms": unet_ms, "sets": len(keys)}


def unmerged_cost(renderer: DiffusersRenderer, job: PanelJob, repeats: int) -> dict[str, float]:
    """One step of R+1 predictions two ways: merged sets switched before each UNet call (what the
    renderer does), or base weights with every set's low-rank branch added inside the Linear
    layers per batch sample, all R+1 conditionings in one batched UNet call."""
    from storyboard.models.lora import read_lora
    from storyboard.models.lora_math import lowrank_factors, module_scale
    from storyboard.render.conditioning import encode_regional, prompt_encoder

    model, rj = renderer.model, renderer.resolve(job)
    dev, patcher, den = renderer.device, model.patcher, model.denoiser
    enc = prompt_encoder(model.components, rj.models.embeddings, rj.settings.clip_skip)
    rc = encode_regional(rj, renderer.resolver, patcher, enc, dev, needs_shared=False)
    keys: list[Any] = [None, *(k for k, _, _ in rc.regions)]
    uses = [job.shared_lora_set, *(r.lora_set for r in job.regions)]
    conds = [rc.panel.uncond[0][1].hidden, *(c[0][1].hidden for _, c, _ in rc.regions)]
    s = rj.settings
    x = torch.randn(1, 4, s.height // 8, s.width // 8, generator=torch.Generator().manual_seed(0)).to(dev)
    sigma = torch.tensor([5.0], device=dev)

    def merged() -> torch.Tensor:
        outs = []
        for key, cond in zip(keys, conds, strict=True):
            rc.switch(key)
            outs.append(den(x, sigma, cond[None]))
        return torch.cat(outs)

    # Per Linear layer, per batch sample: the (scaled up, down) factors of that sample's set.
    branches: dict[torch.nn.Module, list[list[tuple[torch.Tensor, torch.Tensor]]]] = {}
    skipped = 0
    for sample, set_uses in enumerate(uses):
        for u in set_uses:
            net = read_lora(renderer.resolver.lora_file(s, u, rj.models).path)
            tensors = net.tensors_on(dev, torch.float32)
            for name, module in net.modules.items():
                target = patcher.key_map.get(name)
                if target is None or target.component != "unet" or u.unet == 0:
                    continue
                f = lowrank_factors(module, tensors[name])
                if f is None or not isinstance(target.module, torch.nn.Linear):
                    skipped += 1
                    continue
                up, down = f
                per = branches.setdefault(target.module, [[] for _ in uses])
                per[sample].append((up * (module_scale(module) * u.unet), down))

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        h = inp[0]
        extra = torch.zeros_like(out)
        for b, factors in enumerate(branches[mod]):
            for up, down in factors:
                extra[b] += (h[b] @ down.T) @ up.T
        return out + extra

    def batched() -> torch.Tensor:
        return den(x.expand(len(conds), -1, -1, -1), sigma.expand(len(conds)), torch.stack(conds))

    with torch.no_grad():
        want = merged()
        rc.switch(None)
        patcher.restore()
        handles = [m.register_forward_hook(hook) for m in branches]
        try:
            got = batched()
            t = time.perf_counter()
            for _ in range(repeats):
                batched()
            unmerged_ms = (time.perf_counter() - t) * 1000 / repeats
        finally:
            for handle in handles:
                handle.remove()
        t = time.perf_counter()
        for _ in range(repeats):
            merged()
        merged_ms = (time.perf_counter() - t) * 1000 / repeats
    return {
        "merged_switch_step_ms": merged_ms,
        "unmerged_batched_step_ms": unmerged_ms,
        "max_abs_diff": float((got - want).abs().max()),
        "same_result": bool(skipped == 0 and float((got - want).abs().max()) < 1e-3),
        "layers_hooked": len(branches),
        "modules_not_linear_lowrank": skipped,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="use the tiny random model (required for now)")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds for the bleed measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny ops gain nothing)")
    args = ap.parse_args()
    if not args.tiny:
        ap.error("only --tiny is implemented: a real model needs a story and a WebUI folder")
    torch.set_num_threads(args.threads)
    from storyboard.models.tiny import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = write_tiny_model(root / "webui", seed=0)
        renderer = DiffusersRenderer(root, quiet=True, device=args.device)
        seeds = [int(s) for s in args.seeds.split(",")]
        hires = "  hires: {scale: 2, upscaler: Latent, denoising_strength: 0.7}"
        setups: list[tuple[str, dict[str, Any]]] = [
            ("128px", {}),
            ("64px hires 2x", {"hires": hires, "width": 64, "height": 64}),
            ("256px", {"width": 256, "height": 256}),
        ]
        for label, kw in setups:
            rows = bleed(renderer, tiny.root, seeds, **kw)
            for row in rows:
                emit(kind="bleed", setup=label, **row)
            worst = max(r["regional"] / r["global"] for r in rows)
            emit(kind="bleed_summary", setup=label, worst_regional_over_global=worst)
        jobs = story_jobs(tiny.root, 1, weight=1.0, regions="columns 1,1")
        glob = story_jobs(tiny.root, 1, weight=1.0, regions="none")["two"]
        times = {
            "one_character_s": timed_render(renderer, jobs["one"], args.repeats),
            "two_global_s": timed_render(renderer, glob, args.repeats),
            "two_regional_s": timed_render(renderer, jobs["two"], args.repeats),
        }
        emit(kind="render_time", device=args.device, **times,
             regional_over_one=times["two_regional_s"] / times["one_character_s"])  # fmt: skip
        emit(kind="switch", device=args.device, **switch_cost(renderer, jobs["two"], 20 * args.repeats))
        emit(kind="unmerged", device=args.device, **unmerged_cost(renderer, jobs["two"], 10 * args.repeats))


if __name__ == "__main__":
    main()
