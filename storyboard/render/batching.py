"""Which panels render together: groups that share weights and settings, cut into batches.

A group shares everything but prompt and seed (model, VAE, LoRA set with multipliers, size, sampler,
schedule, steps, CFG, clip skip, hires fix, noise source), so one LoRA merge and one sampler loop
serve all of it. Groups keep the order panels first appear in, with groups of one model kept
together so a story with two checkpoints loads each once.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence

from storyboard.jobs import PanelJob

# Rough activation bytes per latent position for one image with both CFG halves (SD1.5 UNet, SDPA,
# fp16): measured peaks run ~60-70 KB per position; double it for headroom.
BYTES_PER_POSITION_FP16 = 128 * 1024
MAX_BATCH = 8


def group_key(job: PanelJob) -> tuple[Hashable, ...]:
    s = job.settings
    return (
        model_key(job),
        tuple((u.name, u.te, u.unet) for u in job.lora_set),
        (s.width, s.height),
        s.sampler,
        s.schedule,
        s.steps,
        s.cfg_scale,
        s.clip_skip,
        json.dumps(s.hires.model_dump(), sort_keys=True) if s.hires else None,
        s.noise_source,
        s.compile,
        s.low_memory,
        # A regional panel switches LoRA sets inside its own sampling loop, an img2img panel starts
        # from its own picture: each renders alone.
        job.panel_id if job.regions or job.img2img else None,
        # A panel with ControlNet units carries its own control images: it renders alone too.
        job.panel_id if job.control else None,
    )


def model_key(job: PanelJob) -> tuple[Hashable, ...]:
    s = job.settings
    return (
        s.model,
        s.vae,
        str(s.webui_root),
        json.dumps(s.folders.model_dump(mode="json"), sort_keys=True),
        s.allow_pickle,
    )


def group_jobs(jobs: Sequence[PanelJob]) -> list[list[PanelJob]]:
    """Jobs grouped by :func:`group_key`, in first-appearance order, groups of a model together."""
    groups: dict[tuple[Hashable, ...], list[PanelJob]] = {}
    model_order: dict[tuple[Hashable, ...], int] = {}
    for job in jobs:
        model_order.setdefault(model_key(job), len(model_order))
        groups.setdefault(group_key(job), []).append(job)
    ordered = sorted(enumerate(groups.values()), key=lambda g: (model_order[model_key(g[1][0])], g[0]))
    return [g for _, g in ordered]


def estimate_batch_size(
    free_bytes: int, width: int, height: int, *, half: bool, limit: int = MAX_BATCH
) -> int:
    """Images per batch that fit in ``free_bytes`` for the largest pass (width x height pixels)."""
    positions = (width // 8) * (height // 8)
    per_image = positions * BYTES_PER_POSITION_FP16 * (1 if half else 2)
    return max(1, min(limit, int(free_bytes * 0.7) // max(per_image, 1)))
