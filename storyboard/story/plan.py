"""Story -> list of PanelJob: pure and cheap, no GPU and no model files.

A PanelJob holds everything that decides a panel's pixels, in the form the render stage consumes.
`storyboard prompts` prints these; the build hashes them (plus model file hashes) to know what to redo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from storyboard.story.compose import compose, panel_context, template_dirs
from storyboard.prompt.extra_networks import LoraUse, extract_extra_networks, merge_lora_uses
from storyboard.story.schema import MAX_SEED, RenderSettings
from storyboard.story.load import LoadedStory


def derive_seed(seed_base: str, panel_id: str) -> int:
    """A panel's default seed: a hash of the story's seed base and the panel id.

    Depending on the id alone (not the panel's position) keeps every other panel's seed when a panel
    is inserted, moved or deleted.
    """
    digest = hashlib.sha256(f"{seed_base}\x00{panel_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


@dataclass(frozen=True)
class PanelJob:
    panel_id: str
    page: int
    index: int
    positive: str  # as WebUI's infotext shows it: LoRA tags kept
    negative: str
    loras: tuple[LoraUse, ...]
    seed: int
    settings: RenderSettings
    characters: tuple[str, ...] = field(default_factory=tuple)
    scene: str = ""

    @property
    def prompt_text(self) -> str:
        """The positive prompt as the text encoder sees it: extra-network tags removed."""
        return extract_extra_networks(self.positive)[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.settings.width, self.settings.height

    @property
    def output_size(self) -> tuple[int, int]:
        return self.settings.output_size

    def pixel_spec(self) -> dict[str, Any]:
        """Everything in the job that changes pixels, as plain JSON-able data (model files by reference)."""
        s = self.settings
        return {
            "positive": self.positive,
            "negative": self.negative,
            "loras": [[u.name, u.te, u.unet] for u in self.loras],
            "seed": self.seed,
            "model": s.model,
            "vae": s.vae,
            "sampler": s.sampler,
            "schedule": s.schedule,
            "steps": s.steps,
            "cfg_scale": s.cfg_scale,
            "size": [s.width, s.height],
            "clip_skip": s.clip_skip,
            "hires": s.hires.model_dump() if s.hires else None,
            "noise_source": s.noise_source,
        }

    def spec_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.pixel_spec(), sort_keys=True).encode()).hexdigest()


def plan(loaded: LoadedStory) -> list[PanelJob]:
    story = loaded.story
    dirs = template_dirs(loaded.base_dir)
    seed_base = story.seed_base if story.seed_base is not None else story.title
    jobs = []
    for page, index, panel in story.panels():
        assert panel.id is not None
        settings = loaded.panel_render[panel.id]
        ctx = panel_context(story, page, index, panel, settings.quality, settings.negative)
        prompt = compose(settings.template, dirs, ctx)
        _, uses = extract_extra_networks(prompt.positive)
        jobs.append(
            PanelJob(
                panel_id=panel.id,
                page=page,
                index=index,
                positive=prompt.positive,
                negative=prompt.negative,
                loras=tuple(merge_lora_uses(uses)),
                seed=panel.seed if panel.seed is not None else derive_seed(seed_base, panel.id),
                settings=settings,
                characters=tuple(panel.characters),
                scene=panel.scene,
            )
        )
    return jobs
