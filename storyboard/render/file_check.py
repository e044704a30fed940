"""Every problem a render would hit before loading weights, all at once (for `validate` and `build`).

``validate_files(jobs, base_dir)`` runs the checks ``Resolver.resolve_job`` runs (sampler and schedule
names, hires settings and upscaler, checkpoint, VAE, each LoRA with its model-family check), but one
at a time and without stopping at the first failure, so a story with three missing files reports
three problems. Each problem names the setting it comes from (``field``), which the app layer turns
into the story's file:line:column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob, RenderSettings
from storyboard.models.registry import Registry
from storyboard.render.resolve import Resolver, check_denoising, checkpoint_kind, find_checkpoint, find_vae
from storyboard.render.sampling import parse_sampler_name

T = TypeVar("T")


@dataclass(frozen=True)
class FileProblem:
    """One problem: the first panel it affects, the setting it comes from, and the sentence.

    field: ("render", "model"), ("render", "hires", "upscaler"), ... or ("lora", owner, name)."""

    panel_id: str
    field: tuple[str, ...]
    message: str


def _sentence(exc: StoryboardError) -> str:
    return exc.message if exc.hint is None else f"{exc.message} ({exc.hint})"


def validate_files(jobs: Sequence[PanelJob], base_dir: Path) -> list[FileProblem]:
    """Every problem the jobs' settings and files have, each reported once (first panel that has it)."""
    resolver = Resolver(base_dir, torch.device("cpu"), torch.float32)
    problems: dict[tuple[tuple[str, ...], str], FileProblem] = {}
    results: dict[tuple[str, ...], object] = {}

    def check(job: PanelJob, field: tuple[str, ...], key: str, fn: Callable[[], T]) -> T | None:
        """Run one check once per distinct input (a story's panels share most settings); a problem is
        recorded under `field` with the first panel that has it."""
        memo = (*field, key)
        if memo in results:
            return results[memo]  # type: ignore[return-value]
        try:
            result: T | None = fn()
        except StoryboardError as exc:
            text = _sentence(exc)
            problems.setdefault((field, text), FileProblem(job.panel_id, field, text))
            result = None
        results[memo] = result
        return result

    for job in jobs:
        s = job.settings
        key = s.model_dump_json()
        check(job, ("render", "sampler"), key, partial(parse_sampler_name, s.sampler, s.schedule))
        hr = s.hires
        if hr is not None:
            check(job, ("render", "hires", "denoising_strength"), key, partial(check_denoising, hr))
            if hr.sampler:
                check(job, ("render", "hires", "sampler"), key, partial(parse_sampler_name, hr.sampler))
        reg = resolver.registry(s)
        kind = check(job, ("render", "model"), key, partial(_kind, s, reg))
        if s.vae:
            check(job, ("render", "vae"), key, partial(find_vae, s, reg))
        check(job, ("render", "hires", "upscaler"), key, partial(resolver.upscaler_file, s, reg))
        for k, unit in enumerate(job.control):
            from storyboard.render.control.files import check_module, find_controlnet

            where = ("control", str(k))
            check(job, (*where, "module"), f"{key}|{unit.module}", partial(check_module, unit))
            check(job, (*where, "model"), f"{key}|{unit.model}", partial(find_controlnet, unit, s, reg, kind))
        for use in job.loras:
            check(
                job,
                ("lora", use.owner, use.name),
                f"{key}|{use.ref or use.name}",
                partial(resolver.find_lora, s, use, reg, kind),
            )
    return list(problems.values())


def _kind(settings: RenderSettings, reg: Registry) -> str | None:
    """The checkpoint's model family ("sd1"/"sdxl", None when unknown without loading), for the
    LoRA family checks that follow."""
    return checkpoint_kind(find_checkpoint(settings, reg).path)
