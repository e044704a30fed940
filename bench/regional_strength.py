"""How strongly a character's LoRA acts in its region of a two-character panel, against the same
LoRA in the character's solo panel, and how much of it reaches the other region.

    python bench/regional_strength.py                      # tiny random model, CPU, seeds 1-5
    python bench/regional_strength.py --seeds 1,2,3 --negative-loras shared

Measured on the final latents (before decoding), same seed everywhere. Two characters, each with a
LoRA of its own and a distinct effect: ``a`` a plain LoRA (tiny_character_v1), ``b`` a LoCon
(tiny-style). The panels: ``two`` (regions: columns: a left, b right), ``global`` (regions: none,
WebUI's whole-panel merge: both LoRAs everywhere) and the solo panels ``a`` and ``b``.

The effect of X's LoRA on a panel, over an area, is

    effect = mean over the area's latent cells and 4 channels of |latent(X at weight) - latent(X at 0)|

with everything else (the other character's LoRA included) unchanged. The areas are the region
interiors: the latent cells where that region's blend weight is 1 (the feathered seam left out).

- ``strength_a`` = effect of a's LoRA in a's region of ``two`` / the same in ``a`` alone (1 = the
  character looks the same alone and together); ``strength_b`` likewise.
- ``bleed_a`` = effect of a's LoRA in b's region of ``two`` / the same in ``global`` (how much of what
  the global merge spills onto b stays with regions); ``bleed_b`` likewise.

Prints one JSON object per seed, then the worst of each over the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storyboard.jobs import PanelJob  # noqa: E402
from storyboard.render import txt2img  # noqa: E402
from storyboard.render.engine import DiffusersRenderer  # noqa: E402
from storyboard.render.regions import blend_weights  # noqa: E402
from storyboard.story.load import load_story_text  # noqa: E402
from storyboard.story.plan import plan  # noqa: E402

STORY = """\
title: Strength
characters:
  a: {{lora: tiny_character_v1, weight: {wa}, triggers: [1girl, red hair]}}
  b: {{lora: tiny-style, weight: {wb}, triggers: [1boy, blue jacket]}}
render:
  model: tiny-sd
  sampler: DPM++ 2M Karras
  steps: {steps}
  cfg_scale: 7
  width: {size}
  height: {size}
  clip_skip: 2
  noise_source: cpu
  webui_root: {root}
  regional: {{negative_loras: {negative_loras}}}
pages:
  - panels:
      - {{id: two, scene: garden, characters: [a, b], seed: {seed}, regions: columns}}
      - {{id: global, scene: garden, characters: [a, b], seed: {seed}, regions: none}}
      - {{id: a, scene: garden, characters: [a], seed: {seed}}}
      - {{id: b, scene: garden, characters: [b], seed: {seed}}}
"""

WEIGHTS = {"a": 1.0, "b": 0.8}


def story_jobs(root: Path, seed: int, weights: dict[str, float], **kw: Any) -> dict[str, PanelJob]:
    """The four panels at the story's own size (not shaped to page frames: all compare cell by cell)."""
    opts: dict[str, Any] = {"size": 128, "steps": 8, "negative_loras": "region"}
    opts.update(kw)
    text = STORY.format(root=root, seed=seed, wa=weights["a"], wb=weights["b"], **opts)
    loaded = load_story_text(text, root / "strength.yaml")
    return {j.panel_id: replace(j, settings=loaded.panel_render[j.panel_id]) for j in plan(loaded)}


@contextmanager
def captured_latents() -> Iterator[list[torch.Tensor]]:
    """Every final latent the renderer decodes, in order."""
    kept: list[torch.Tensor] = []
    decode = txt2img.decode_latents

    def keep(vae: Any, latent: torch.Tensor) -> Any:
        kept.append(latent.detach().to("cpu", torch.float64).clone())
        return decode(vae, latent)

    txt2img.decode_latents = keep  # type: ignore[assignment]
    try:
        yield kept
    finally:
        txt2img.decode_latents = decode


def final_latents(renderer: DiffusersRenderer, jobs: list[PanelJob]) -> dict[str, np.ndarray]:
    out = {}
    for job in jobs:  # one at a time: each panel's latent is the one decoded for it
        with captured_latents() as kept:
            list(renderer.render([job]))
        out[job.panel_id] = kept[-1][0].numpy()
    return out


def interiors(job: PanelJob, h: int, w: int) -> dict[str, np.ndarray]:
    """Each region's interior on the (h, w) latent grid: where its blend weight is exactly 1."""
    rs = job.settings.regional
    weights, _ = blend_weights([r.box for r in job.regions], h, w, feather=rs.feather, base_ratio=0.0)
    return {r.character: weights[n] == 1.0 for n, r in enumerate(job.regions)}


def effect(with_lora: np.ndarray, without: np.ndarray, area: np.ndarray) -> float:
    """mean |difference| over the area's cells and every channel."""
    return float(np.abs(with_lora - without)[:, area].mean())


def strength(renderer: DiffusersRenderer, root: Path, seed: int, **kw: Any) -> dict[str, float]:
    """The figures of one seed (see the module docstring)."""
    full = story_jobs(root, seed, WEIGHTS, **kw)
    lat = {"full": final_latents(renderer, list(full.values()))}
    for who in ("a", "b"):
        off = story_jobs(root, seed, {**WEIGHTS, who: 0.0}, **kw)
        lat[who] = final_latents(renderer, [off["two"], off["global"], off[who]])
    h, w = lat["full"]["two"].shape[-2:]
    inside = interiors(full["two"], h, w)
    row: dict[str, float] = {"seed": seed}
    for who, other in (("a", "b"), ("b", "a")):

        def eff(panel: str, area: str, who: str = who) -> float:
            return effect(lat["full"][panel], lat[who][panel], inside[area])

        row[f"strength_{who}"] = eff("two", who) / eff(who, who)
        row[f"bleed_{who}"] = eff("two", other) / eff("global", other)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds")
    ap.add_argument("--negative-loras", default="region", choices=["region", "shared"])
    ap.add_argument("--size", type=int, default=128, help="panel width and height in pixels")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny ops gain nothing)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from storyboard.models.tiny import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = write_tiny_model(root / "webui", seed=0)
        renderer = DiffusersRenderer(root, quiet=True, device=args.device)
        kw = {"negative_loras": args.negative_loras, "size": args.size, "steps": args.steps}
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(strength(renderer, tiny.root, seed, **kw))
            print(json.dumps({"negative_loras": args.negative_loras, **rows[-1]}), flush=True)
        summary: dict[str, object] = {"summary": args.negative_loras, "device": args.device}
        for key in ("strength_a", "strength_b"):
            summary[f"{key}_range"] = [min(r[key] for r in rows), max(r[key] for r in rows)]
        for key in ("bleed_a", "bleed_b"):
            summary[f"{key}_max"] = max(r[key] for r in rows)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
