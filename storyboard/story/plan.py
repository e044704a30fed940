"""Story -> list of PanelJob: pure and cheap, no GPU and no model files.

A PanelJob (``storyboard.jobs``) holds everything that decides a panel's pixels, in the form the render
stage consumes. `storyboard prompts` prints these; the build hashes them (plus model file hashes) to
know what to redo. LoRA uses come from the story's data with their owners; the ``<lora:...>`` tags in
the composed prompt are only what the user and WebUI's infotext see.
"""

from __future__ import annotations

import hashlib

from storyboard.jobs import PanelJob
from storyboard.prompt.extra_networks import LoraUse, extract_extra_networks
from storyboard.story.compose import compose, panel_context, template_dirs
from storyboard.story.load import LoadedStory
from storyboard.story.schema import MAX_SEED, Panel, Story


def derive_seed(seed_base: str, panel_id: str) -> int:
    """A panel's default seed: a hash of the story's seed base and the panel id.

    Depending on the id alone (not the panel's position) keeps every other panel's seed when a panel
    is inserted, moved or deleted.
    """
    digest = hashlib.sha256(f"{seed_base}\x00{panel_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


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
        positive, uses = lora_uses(story, panel, prompt.positive)
        jobs.append(
            PanelJob(
                panel_id=panel.id,
                page=page,
                index=index,
                positive=positive,
                negative=prompt.negative,
                loras=uses,
                seed=panel.seed if panel.seed is not None else derive_seed(seed_base, panel.id),
                settings=settings,
                characters=tuple(panel.characters),
                scene=panel.scene,
            )
        )
    return jobs


def lora_uses(story: Story, panel: Panel, positive: str) -> tuple[str, tuple[LoraUse, ...]]:
    """The panel's LoRA uses, each with its owner, and the positive prompt to show.

    The story's data says which LoRAs the panel gets: each present character's, then the style's.
    Tags in the composed prompt are matched to those uses by their text (the template writes them
    from the same data), in prompt order, as WebUI would apply them; a tag no data use claims was
    written by hand in the scene or a template and is owned by "prompt". A data use whose tag a custom
    template left out is still applied, and its tag is appended to the shown prompt so the infotext
    says what was applied.

    >>> s = Story.model_validate({"title": "t", "characters": {"iku": {"lora": "iku", "weight": 0.8}},
    ...     "pages": [{"panels": [{"scene": "x <lora:hat:0.5>", "characters": ["iku"]}]}]})
    >>> _, _, p = s.panels()[0]
    >>> text, uses = lora_uses(s, p, "x, <lora:iku:0.8>, <lora:hat:0.5>")
    >>> [(u.name, u.te, u.owner) for u in uses]
    [('iku', 0.8, 'character:iku'), ('hat', 0.5, 'prompt')]
    """
    data = [story.characters[cid].use(f"character:{cid}") for cid in panel.characters]
    data += [s.use("style") for s in story.style.loras]
    unclaimed = list(data)
    uses: list[LoraUse] = []
    for written in extract_extra_networks(positive)[1]:
        match = next((u for u in unclaimed if u.tag() == written.tag()), None)
        if match is None:
            uses.append(written)
        else:
            unclaimed.remove(match)
            uses.append(match)
    if unclaimed:
        positive = (
            ", ".join([positive, *(u.tag() for u in unclaimed)])
            if positive
            else ", ".join(u.tag() for u in unclaimed)
        )
        uses.extend(unclaimed)
    return positive, tuple(uses)
