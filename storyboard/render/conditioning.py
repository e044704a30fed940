"""Step 2 of a render: conditioning. The LoRA set goes into the weights, then every prompt of the job
is encoded the way WebUI encodes it (chunks, emphasis, clip skip, embeddings, prompt editing).

Text-encoder LoRA weights act through the encoder's merged weights, so a job's prompts are encoded
after its LoRA set is applied; the encoder is built per group for that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from storyboard.models.load import ModelComponents
from storyboard.models.lora import LoraPatcher, read_lora
from storyboard.prompt.embeddings import Embedding
from storyboard.prompt.encode import PromptEncoder, SDXLPromptEncoder
from storyboard.prompt.schedule import prompt_schedule
from storyboard.render.denoiser import Conditioning, merge_schedules
from storyboard.render.resolve import ResolvedJob, hires_negative, hires_prompt

# [(end_step, Conditioning)] for one image: hidden (T, C); SDXL adds "text_embeds" (P,).
CondSchedule = list[tuple[int, Conditioning]]
Encoder = PromptEncoder | SDXLPromptEncoder


@dataclass
class PanelConds:
    """One panel's encoded prompts for both passes (hires ones None without a hires fix)."""

    cond: CondSchedule
    uncond: CondSchedule
    hr_cond: CondSchedule | None
    hr_uncond: CondSchedule | None

    @property
    def shape_key(self) -> tuple[int, ...]:
        """Token counts of the four prompts: panels batch together only when these match."""

        def tokens(s: CondSchedule | None) -> int:
            return 0 if s is None else int(s[0][1].hidden.shape[0])

        return tokens(self.cond), tokens(self.uncond), tokens(self.hr_cond), tokens(self.hr_uncond)


def apply_lora_set(patcher: LoraPatcher, rj: ResolvedJob) -> None:
    """Merge the job's whole-panel LoRA set into the weights (a no-op when it is already applied)."""
    if not rj.loras:
        patcher.restore()
        return
    allow = rj.settings.allow_pickle
    patcher.apply([(read_lora(r.file.path, allow_pickle=allow), r.use.te, r.use.unet) for r in rj.loras])


def prompt_encoder(comps: ModelComponents, embeddings: dict[str, Embedding], clip_skip: int) -> Encoder:
    if comps.kind == "sdxl":
        # WebUI's SDXL conditioner takes the penultimate layers whatever clip skip says.
        return SDXLPromptEncoder(
            comps.tokenizer, comps.text_encoder, comps.tokenizer_2, comps.text_encoder_2, embeddings
        )
    return PromptEncoder(comps.tokenizer, comps.text_encoder, embeddings, clip_skip)


def encode_job(rj: ResolvedJob, encoder: Encoder, device: torch.device) -> PanelConds:
    """Both passes' positive and negative prompts, as prompt-editing schedules on `device`."""
    s = rj.settings
    total = rj.spec.schedule_steps(s.steps)

    def enc(text: str, steps: int, hires_steps: int | None = None, negative: bool = False) -> CondSchedule:
        sched = prompt_schedule(text, steps, hires_steps=hires_steps)
        if isinstance(encoder, PromptEncoder):
            return [(end, Conditioning(z[0].to(device))) for end, z in encoder.encode_schedule(sched)]
        out: CondSchedule = []
        for end, z, pooled in encoder.encode_schedule(sched):
            if negative and text == "":
                # WebUI (sd_models_xl): an empty SDXL negative prompt is all zeros, pooled too.
                z, pooled = torch.zeros_like(z), torch.zeros_like(pooled)
            out.append((end, Conditioning(z[0].to(device), {"text_embeds": pooled[0].to(device)})))
        return out

    job = rj.job
    cond, uncond = enc(job.prompt_text, total), enc(job.negative, total, negative=True)
    hr_cond = hr_uncond = None
    if s.hires is not None and rj.hr_spec is not None:
        hr_total = rj.hr_spec.schedule_steps(s.hires.steps or s.steps)
        hr_cond = enc(hires_prompt(job), total, hr_total)
        hr_uncond = enc(hires_negative(job), total, hr_total, negative=True)
    return PanelConds(cond, uncond, hr_cond, hr_uncond)


def merge_conds(per_image: Sequence[CondSchedule], time_ids: Tensor) -> CondSchedule:
    """Per-image schedules -> one batch schedule (denoiser.merge_schedules, extended to SDXL's
    pooled embedding, which gets the batch's time ids)."""
    hidden = merge_schedules([[(end, c.hidden) for end, c in sched] for sched in per_image])
    if "text_embeds" not in per_image[0][0][1].added:
        return [(end, Conditioning(h)) for end, h in hidden]
    pooled = merge_schedules(
        [[(end, c.added["text_embeds"][None]) for end, c in sched] for sched in per_image]
    )
    batch = len(per_image)
    return [
        (end, Conditioning(h, {"text_embeds": p[:, 0], "time_ids": time_ids.expand(batch, -1)}))
        for (end, h), (_, p) in zip(hidden, pooled, strict=True)
    ]
