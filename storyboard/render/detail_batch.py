"""The face detailer's batches: several faces of one panel in one sampling loop.

Each face carries its own LoRA set (its character's and the style's), so a batch shares UNet calls
only with the sets applied per sample: the LoRAs every face of the batch has (the style's, at the
same multipliers) are merged into the weights as for a single face; each face's own ones ride on
its rows of the batch unmerged (``render/lora_rows.py``), for its cond and its uncond alike, so each
face's negative prompt runs under its own set as it would alone. Prompts are encoded before sampling,
each face's under its whole set merged (text-encoder LoRAs act through the merged weights).

A batch falls back to one face at a time, each with its whole set merged as today, where sharing a
call would be wrong or unknown: faces whose prompts have different token counts (a batch pads the
shorter ones), a face LoRA without a low-rank form (LoHa, LoKr, full diffs, CP ``lora_mid``: never
dropped, merged instead), ``render.compile`` on (a captured CUDA graph or compiled graph would not
run hooks added after it), ``render.low_memory`` on, or the GPU running out of memory.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import torch
from PIL import Image

from storyboard.models.lora import read_lora
from storyboard.render.conditioning import PanelConds, apply_lora_set, encode_job, prompt_encoder
from storyboard.render.img2img import batchable, render_img2img, render_img2img_batch
from storyboard.render.lora_rows import LoraUse, row_deltas, row_loras
from storyboard.render.progress import RenderProgress
from storyboard.render.resolve import ResolvedJob, ResolvedLora
from storyboard.render.txt2img import LoadedModel, Stage


def split_sets(
    rjs: Sequence[ResolvedJob],
) -> tuple[list[ResolvedLora], list[list[ResolvedLora]]]:
    """The LoRA uses every job has (same name and multipliers, in the first job's order), and each
    job's others."""

    def key(r: ResolvedLora) -> tuple[str, float, float]:
        return r.use.name, float(r.use.te), float(r.use.unet)

    shared = set.intersection(*({key(r) for r in rj.loras} for rj in rjs))
    common = [r for r in rjs[0].loras if key(r) in shared]
    return common, [[r for r in rj.loras if key(r) not in shared] for rj in rjs]


def _networks(loras: Sequence[ResolvedLora], allow_pickle: bool) -> list[LoraUse]:
    return [(read_lora(r.file.path, allow_pickle=allow_pickle), r.use.te, r.use.unet) for r in loras]


def redraw_faces(
    model: LoadedModel, rjs: list[ResolvedJob], picture: Image.Image, stage: Stage
) -> list[Image.Image]:
    """Each face job rendered over `picture` (see the module docstring); results in job order."""
    patcher, device = model.patcher, model.device
    conds: list[PanelConds] = []
    for rj in rjs:
        apply_lora_set(patcher, rj)
        encoder = prompt_encoder(model.components, rj.models.embeddings, rj.settings.clip_skip)
        conds.append(encode_job(rj, encoder, device))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(conds):
        groups.setdefault(c.shape_key, []).append(i)
    out: dict[int, Image.Image] = {}
    with RenderProgress(1, False) as progress:
        for members in groups.values():
            batch = [rjs[i] for i in members]
            images = None
            if len(members) > 1 and batchable(batch, [conds[i] for i in members]):
                images = _one_loop(model, batch, [conds[i] for i in members], picture, stage, progress)
            if images is None:
                images = []
                for i in members:
                    apply_lora_set(patcher, rjs[i])
                    images.append(render_img2img(model, rjs[i], conds[i], progress, stage, picture=picture))
            out.update(zip(members, images, strict=True))
    return [out[i] for i in range(len(rjs))]


def _one_loop(
    model: LoadedModel,
    batch: list[ResolvedJob],
    conds: list[PanelConds],
    picture: Image.Image,
    stage: Stage,
    progress: RenderProgress,
) -> list[Image.Image] | None:
    """The batch in one sampling loop with per-sample LoRAs; None where it must go one at a time."""
    s = batch[0].settings
    if s.compile != "off" or s.low_memory:
        return None
    common, own = split_sets(batch)
    deltas = row_deltas(model.patcher, [_networks(o, s.allow_pickle) for o in own])
    if deltas is None:
        return None
    if common:
        model.patcher.apply(_networks(common, s.allow_pickle))
    else:
        model.patcher.restore()
    try:
        with row_loras(deltas, len(batch)):
            return render_img2img_batch(model, batch, conds, progress, stage, picture=picture)
    except torch.cuda.OutOfMemoryError:
        # Free what the batch held; its faces then go one at a time.
        gc.collect()
        torch.cuda.empty_cache()
        return None
