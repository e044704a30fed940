"""Step 2 of a render: conditioning. The LoRA set goes into the weights, then every prompt of the job
is encoded the way WebUI encodes it (chunks, emphasis, clip skip, embeddings, prompt editing).

Text-encoder LoRA weights act through the encoder's merged weights, so a job's prompts are encoded
after its LoRA set is applied; the encoder is built per group for that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from storyboard.jobs import LoraUse
from storyboard.models.load import ModelComponents
from storyboard.models.lora import LoraNetwork, LoraPatcher, read_lora
from storyboard.prompt.embeddings import Embedding
from storyboard.prompt.encode import PromptEncoder, SDXLPromptEncoder
from storyboard.prompt.extra_networks import extract_extra_networks
from storyboard.prompt.schedule import prompt_schedule
from storyboard.render.denoiser import Conditioning, merge_schedules
from storyboard.render.resolve import ResolvedJob, Resolver, hires_negative, hires_prompt

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


def encode_text(
    encoder: Encoder,
    device: torch.device,
    text: str,
    steps: int,
    hires_steps: int | None = None,
    negative: bool = False,
) -> CondSchedule:
    """One prompt as a prompt-editing schedule of per-image conditionings on `device`."""
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


def encode_job(rj: ResolvedJob, encoder: Encoder, device: torch.device) -> PanelConds:
    """Both passes' positive and negative prompts, as prompt-editing schedules on `device`."""
    s = rj.settings
    total = rj.spec.schedule_steps(s.steps)

    def enc(text: str, steps: int, hires_steps: int | None = None, negative: bool = False) -> CondSchedule:
        return encode_text(encoder, device, text, steps, hires_steps, negative)

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


# Regional panels ------------------------------------------------------------------------------------

LoraSetKey = tuple[tuple[str, float, float], ...]


def lora_set_key(uses: Sequence[LoraUse]) -> LoraSetKey:
    """A hashable name for a LoRA set: equal sets share one key (and one prepared merge)."""
    return tuple((u.name, float(u.te), float(u.unet)) for u in uses)


@dataclass
class RegionalConds:
    """A regional panel's encoded prompts, each under its own text-encoder LoRA set.

    ``regions[i]`` is (LoRA set key, first-pass schedule, hires schedule or None) for job region i;
    ``shared`` is the shared prompt (None when no pass needs it); ``panel`` holds the negative prompt,
    encoded once under the shared set, as ``uncond``/``hr_uncond``. ``negatives[i]`` is the negative
    prompt (first pass, hires) encoded under region i's set, for ``negative_loras: region`` (None
    under ``shared``: every region's uncond is the panel's). ``switch`` puts a key's LoRA set into
    the weights (None: the shared set)."""

    regions: list[tuple[LoraSetKey, CondSchedule, CondSchedule | None]]
    shared: tuple[CondSchedule, CondSchedule | None] | None
    panel: PanelConds
    switch: Callable[[Hashable | None], None]
    negatives: list[tuple[CondSchedule, CondSchedule | None]] | None = None


def encode_regional(
    rj: ResolvedJob,
    resolver: Resolver,
    patcher: LoraPatcher,
    encoder: Encoder,
    device: torch.device,
    needs_shared: bool,
) -> RegionalConds:
    """Encode every region's prompt with its own LoRA set merged (text-encoder LoRAs act through the
    merged weights), and the negative (and shared) prompt under the shared set; with
    ``negative_loras: region`` the negative also under each region's set (once per distinct set)."""
    job, s = rj.job, rj.settings
    allow = s.allow_pickle
    total = rj.spec.schedule_steps(s.steps)
    hr_total = rj.hr_spec.schedule_steps(s.hires.steps or s.steps) if s.hires and rj.hr_spec else None

    def networks(uses: Sequence[LoraUse]) -> list[tuple[LoraNetwork, float, float]]:
        files = [resolver.lora_file(s, u, rj.models) for u in uses]
        pairs = zip(files, uses, strict=True)
        return [(read_lora(f.path, allow_pickle=allow), u.te, u.unet) for f, u in pairs]

    sets: dict[Hashable | None, list[tuple[LoraNetwork, float, float]]] = {
        None: networks(job.shared_lora_set)
    }
    for region in job.regions:
        sets.setdefault(lora_set_key(region.lora_set), networks(region.lora_set))
    # Every set stays prepared on the device, so a per-step switch is a merge, never a re-plan.
    patcher.prepared_sets = max(patcher.prepared_sets, len(sets) + 1)

    def switch(key: Hashable | None) -> None:
        nets = sets[key]
        if nets:
            patcher.apply(nets)
        else:
            patcher.restore()

    def enc(text: str, negative: bool = False) -> tuple[CondSchedule, CondSchedule | None]:
        first = encode_text(encoder, device, text, total, negative=negative)
        hires = None if hr_total is None else encode_text(encoder, device, text, total, hr_total, negative)
        return first, hires

    def negative() -> tuple[CondSchedule, CondSchedule | None]:
        first = encode_text(encoder, device, job.negative, total, negative=True)
        if hr_total is None:
            return first, None
        return first, encode_text(encoder, device, hires_negative(job), total, hr_total, negative=True)

    own_negative = s.regional.negative_loras == "region"
    regions, by_set = [], {}
    for region in job.regions:
        key = lora_set_key(region.lora_set)
        switch(key)
        cond, hr_cond = enc(region.prompt_text)
        regions.append((key, cond, hr_cond))
        if own_negative and key not in by_set:
            by_set[key] = negative()  # one schedule object per set: the denoiser evaluates it once
    negatives = [by_set[key] for key, _, _ in regions] if own_negative else None
    switch(None)
    uncond, hr_uncond = negative()
    shared = enc(extract_extra_networks(job.shared_positive)[0]) if needs_shared else None
    panel = PanelConds(regions[0][1], uncond, regions[0][2], hr_uncond)
    return RegionalConds(regions, shared, panel, switch, negatives)
