"""Story -> list of PanelJob: pure and cheap, no GPU and no model files.

A PanelJob (``storyboard.jobs``) holds everything that decides a panel's pixels, in the form the render
stage consumes. `storyboard prompts` prints these; the build hashes them (plus model file hashes) to
know what to redo. LoRA uses come from the story's data with their owners; the ``<lora:...>`` tags in
the composed prompt are only what the user and WebUI's infotext see.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from storyboard.jobs import PanelJob, RegionJob
from storyboard.prompt.extra_networks import LoraUse, extract_extra_networks
from storyboard.story.base import MAX_SEED
from storyboard.story.compose import compose, panel_context, template_dirs
from storyboard.story.detail import DetailJob, DetailTarget, face_prompt
from storyboard.story.frames import panel_frames
from storyboard.story.img2img import img2img_job
from storyboard.story.inputs import control_inputs
from storyboard.story.load import LoadedStory, StoryError, position_of, setting_location
from storyboard.story.regions import Box, parse_split, split_boxes, split_ratios
from storyboard.story.schema import Panel, RenderSettings, Story


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
    frames = panel_frames(loaded)
    jobs = []
    problems: list[str] = []  # input images that cannot be used, each at its field's line
    for page, index, panel in story.panels():
        placed = region_boxes(panel, rtl=story.layout.reading_direction == "rtl")
        if len(placed) == 1 and placed[0][1] == WHOLE_PANEL:
            # One region over the whole panel is the panel itself (e.g. `regions: columns` on a
            # one-character panel): the plain panel, its words joined to the scene as a region's are.
            panel = panel.model_copy(update={"scene": join_words(panel.scene, placed[0][2])})
            placed = []
        assert panel.id is not None
        w, h = frames[panel.id].size
        settings = loaded.panel_render[panel.id].model_copy(update={"width": w, "height": h})
        ctx = panel_context(story, page, index, panel, settings.quality, settings.negative)
        prompt = compose(settings.template, dirs, ctx)
        positive, uses = lora_uses(story, panel, prompt.positive)
        job = PanelJob(
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
        control, inputs = control_inputs(loaded, panel, problems)
        if control:
            job = replace(job, control=control, inputs=(*job.inputs, *inputs))
        if placed:
            job = regional_job(job, story, (page, index, panel), settings, dirs, placed)
        job = img2img_job(loaded, job, panel, problems)
        if settings.detail is not None and settings.detail.enabled and panel.characters:
            # Last, so an inpaint's base (the panel under it) is not detailed: only the final picture.
            job = replace(job, detail=detail_job(story, (page, index, panel), settings, dirs, placed))
            problems += face_seed_problems(loaded, panel, settings)
        jobs.append(job)
    if problems:
        raise StoryError(problems)
    return jobs


WHOLE_PANEL: Box = (0.0, 0.0, 1.0, 1.0)


def join_words(scene: str, words: str) -> str:
    """A region's prompt words after the scene's.

    >>> join_words("garden", "holding guitar"), join_words("garden", "")
    ('garden, holding guitar', 'garden')
    """
    return ", ".join(p for p in (scene, words) if p.strip())


def region_boxes(panel: Panel, *, rtl: bool = False) -> list[tuple[str, Box, str]]:
    """(character, box, region prompt) for each region of the panel; [] for an ordinary panel.

    Two or more characters and no ``regions``: equal columns in the order listed (right to left for
    a right-to-left book), so each character keeps to its own LoRA without the writer asking.

    >>> p = Panel(scene="x", characters=["iku", "haru"])
    >>> region_boxes(p)
    [('iku', (0.0, 0.0, 0.5, 1.0), ''), ('haru', (0.5, 0.0, 1.0, 1.0), '')]
    >>> [c for c, box, _ in region_boxes(p, rtl=True) if box[0] == 0.0]
    ['haru']
    >>> region_boxes(Panel(scene="x", characters=["iku", "haru"], regions="none"))
    []
    """
    chars, regions = list(panel.characters), panel.regions
    if regions == "none" or (regions is None and len(chars) < 2):
        return []
    if isinstance(regions, list):
        if all(r.box is not None for r in regions):
            return [(r.character, r.box, r.prompt) for r in regions if r.box is not None]
        boxes = split_boxes("columns", (), len(regions), rtl=rtl)
        return [(r.character, b, r.prompt) for r, b in zip(regions, boxes, strict=True)]
    kind, ratios = parse_split(regions) if isinstance(regions, str) else ("columns", ())
    return [(c, b, "") for c, b in zip(chars, split_boxes(kind, ratios, len(chars), rtl=rtl), strict=True)]


def regional_job(
    job: PanelJob,
    story: Story,
    where: tuple[int, int, Panel],
    settings: RenderSettings,
    dirs: list[Path],
    placed: list[tuple[str, Box, str]],
) -> PanelJob:
    """The job with its regions: each region's prompt is the panel composed by the same template
    as if only its character were present (plus the region's words), so it carries that
    character's triggers and LoRA tag and nobody else's; the shared prompt is the panel composed
    with no character."""
    _, _, panel = where

    def composed(characters: list[str], scene: str) -> tuple[str, tuple[LoraUse, ...]]:
        return compose_alone(story, where, settings, dirs, characters, scene)

    regions = []
    for cid, box, words in placed:
        positive, uses = composed([cid], join_words(panel.scene, words))
        regions.append(RegionJob(cid, box, positive, uses))
    shared_positive, shared_uses = composed([], panel.scene)
    # Every use of any region, once: what the panel loads, hashes and names in its infotext, in
    # the order the panel without regions lists them (characters, then style), new ones after.
    seen = list(dict.fromkeys([*shared_uses, *(u for r in regions for u in r.loras)]))
    known = {u: n for n, u in enumerate(job.loras)}
    union = tuple(sorted(seen, key=lambda u: known.get(u, len(known))))
    return replace(
        job,
        positive=regional_prompt(regions, shared_positive, settings.regional.base_ratio),
        loras=union,
        regions=tuple(regions),
        shared_positive=shared_positive,
        shared_loras=shared_uses,
    )


def compose_alone(
    story: Story,
    where: tuple[int, int, Panel],
    settings: RenderSettings,
    dirs: list[Path],
    characters: list[str],
    scene: str,
    words: Callable[[str], str] | None = None,
) -> tuple[str, tuple[LoraUse, ...]]:
    """The panel composed by its template as if only `characters` were in it (its prompt and LoRA
    uses: theirs and the style's, nobody else's); `words(text)`, when given, rewrites the text
    before its LoRA tags are matched (a tag it drops is appended again)."""
    page, index, panel = where
    alone = panel.model_copy(update={"characters": characters, "scene": scene})
    ctx = panel_context(story, page, index, alone, settings.quality, settings.negative)
    positive = compose(settings.template, dirs, ctx).positive
    return lora_uses(story, alone, positive if words is None else words(positive))


def detail_job(
    story: Story,
    where: tuple[int, int, Panel],
    settings: RenderSettings,
    dirs: list[Path],
    placed: list[tuple[str, Box, str]],
) -> DetailJob:
    """The face detailer's targets: each character of the panel with the face prompt and LoRA set
    of the panel composed as if it were alone (so another character's LoRA never reaches its
    face), and its region when the panel has regions. Characters whose `detail.enabled` is false
    are not targets: their faces are left as rendered."""
    detail = settings.detail
    assert detail is not None
    _, _, panel = where
    boxes = {cid: box for cid, box, _ in placed}
    targets = []
    for cid in dict.fromkeys(panel.characters):
        extra = story.characters[cid].detail
        if not extra.enabled:
            continue

        def words(text: str, extra_words: str = extra.prompt) -> str:
            return face_prompt(detail, text, extra_words)

        text, uses = compose_alone(story, where, settings, dirs, [cid], panel.scene, words)
        targets.append(DetailTarget(cid, text, uses, boxes.get(cid)))
    return DetailJob(detail, tuple(targets))


def face_seed_problems(loaded: LoadedStory, panel: Panel, settings: RenderSettings) -> list[str]:
    """`render.detail.seeds` names only characters of the panel (a typo would silently do nothing)."""
    assert settings.detail is not None and panel.id is not None
    out = []
    for cid in settings.detail.seeds:
        if cid not in panel.characters:
            loc = setting_location(loaded, panel.id, ("render", "detail", "seeds", cid))
            out.append(
                f"{position_of(loaded, loc)}: render.detail.seeds.{cid}: {cid!r} is not a character of "
                f"panel {panel.id} ({', '.join(panel.characters)})"
            )
    return out


def regional_prompt(regions: list[RegionJob], shared: str, base_ratio: float) -> str:
    """The panel's prompt as Regional Prompter writes it: region prompts joined by ADDCOL (columns),
    ADDROW (rows) or BREAK (free boxes), the shared prompt first with ADDBASE when it is mixed in
    (a base ratio, or free boxes that may leave the background to it). A WebUI user with the
    extension in latent mode gets each region's LoRA tags applied in that region only."""
    split = split_ratios([r.box for r in regions])
    use_base = base_ratio > 0 or split is None
    sep = {"columns": " ADDCOL ", "rows": " ADDROW "}.get(split[0] if split else "", " BREAK ")
    ordered = regions
    if split is not None:
        axis = 0 if split[0] == "columns" else 1
        ordered = sorted(regions, key=lambda r: r.box[axis])  # Regional Prompter reads left to right
    text = sep.join(r.positive for r in ordered)
    return f"{shared} ADDBASE {text}" if use_base else text


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
