"""Directing a panel from the review page: attach or replace its init image, draw or upload a mask
(or give a box), preview the result, then keep it (the pictures go beside the story, the settings
into the story file) or discard it.

Uploads and previews are staged in the output folder (``direct/<panel>/``), so a preview writes
nothing else; only Keep writes beside the story: ``inputs/<panel>-init.png`` and
``inputs/<panel>-mask.png``, and the panel's ``init_image`` / ``denoising_strength`` /
``resize_mode`` / ``inpaint`` keys and the one ControlNet unit the form edits, adds or removes
(``Direction.control_unit``; comments kept, version-checked like every page edit). A kept
direction renders to the very hash its preview had (pictures count by content), so the render after
Keep comes from the store.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from storyboard.app.build import output_dir, render_one
from storyboard.errors import StoryboardError
from storyboard.input_images import load_input_image
from storyboard.jobs import PanelJob, Renderer
from storyboard.story.edit import direct_panel_text
from storyboard.story.inputs import panel_control
from storyboard.story.load import LoadedStory, load_story, load_story_text
from storyboard.story.plan import plan
from storyboard.writes import atomic_write_bytes, safe_child, write_bytes

ROLES = ("init", "mask", "control")
INPUTS_DIR = "inputs"  # beside the story: where kept pictures go


@dataclass(frozen=True)
class Direction:
    """What the page's Direct form says. `init` / `mask`: "new" (the staged upload), "keep" (what
    the story has), or "none"; with no mask picture, `box` (panel fractions) says where to repaint."""

    init: str = "none"
    denoising_strength: float = 0.75
    resize_mode: str = "Just resize"
    mask: str = "none"
    box: tuple[float, float, float, float] | None = None
    mask_blur: int = 4
    masked_content: str = "original"
    inpaint_full_res: bool = False
    padding: int = 32
    # Which of the panel's ControlNet units the control fields edit (its index in the panel's
    # list; the list's length adds a unit), and its picture: "new" (the staged upload), "keep"
    # (its image), "none" (remove it; at the adding index: add nothing).
    control_unit: int = 0
    control: str = "keep"
    control_module: str = "none"
    control_model: str = ""
    control_weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0

    @classmethod
    def from_form(cls, data: dict[str, Any]) -> Direction:
        try:
            box = data.get("box")
            return cls(
                init=str(data.get("init", "none")),
                denoising_strength=float(data.get("denoising_strength", 0.75)),
                resize_mode=str(data.get("resize_mode", "Just resize")),
                mask=str(data.get("mask", "none")),
                box=tuple(float(v) for v in box) if box else None,  # type: ignore[arg-type]
                mask_blur=int(data.get("mask_blur", 4)),
                masked_content=str(data.get("masked_content", "original")),
                inpaint_full_res=bool(data.get("inpaint_full_res", False)),
                padding=int(data.get("padding", 32)),
                control_unit=int(data.get("control_unit", 0)),
                control=str(data.get("control", "keep")),
                control_module=str(data.get("control_module", "none")),
                control_model=str(data.get("control_model", "")).strip(),
                control_weight=float(data.get("control_weight", 1.0)),
                guidance_start=float(data.get("guidance_start", 0.0)),
                guidance_end=float(data.get("guidance_end", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise StoryboardError(f"Direct: a setting is not a number ({exc}).") from None


def stage_dir(loaded: LoadedStory, out: Path, panel_id: str, *, draft: bool) -> Path:
    loaded.story.panel(panel_id)  # unknown id: a sentence with suggestions
    return safe_child(output_dir(loaded, out, draft=draft), "direct", panel_id)


def stage_picture(story: Path, out: Path, panel_id: str, role: str, data: bytes, *, draft: bool) -> Path:
    """Keep an uploaded picture (re-encoded as PNG) in the panel's staging folder."""
    if role not in ROLES:
        raise StoryboardError(f"Direct: unknown picture {role!r}; use one of {', '.join(ROLES)}.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            buf = io.BytesIO()
            img.save(buf, format="PNG")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise StoryboardError(f"Direct: the uploaded {role} picture cannot be read ({exc}).") from None
    loaded = load_story(story)
    folder = stage_dir(loaded, out, panel_id, draft=draft)
    return write_bytes(output_dir(loaded, out, draft=draft), folder / f"{role}.png", buf.getvalue())


def _settings(loaded: LoadedStory, panel_id: str, d: Direction, pictures: dict[str, str]) -> dict[str, Any]:
    """The panel's direction keys for the story file; `pictures` holds the new paths by role."""
    panel = loaded.story.panel(panel_id)
    init = pictures.get("init") if d.init == "new" else (panel.init_image if d.init == "keep" else None)
    old_mask = panel.inpaint.mask if panel.inpaint is not None else None
    mask = pictures.get("mask") if d.mask == "new" else (old_mask if d.mask == "keep" else None)
    inpaint: dict[str, Any] | None = None
    if mask is not None or d.box is not None:
        inpaint = {"mask": str(mask)} if mask is not None else {"box": list(d.box or ())}
        inpaint |= {"mask_blur": d.mask_blur, "masked_content": d.masked_content}
        if d.inpaint_full_res:
            inpaint |= {"inpaint_full_res": True, "padding": d.padding}
        if panel.inpaint is not None and panel.inpaint.seed is not None:
            inpaint["seed"] = panel.inpaint.seed  # a picked inpaint seed stays
    directed = init is not None or inpaint is not None
    return {
        "control": _control(loaded, panel, d, pictures.get("control")),
        "init_image": str(init) if init is not None else None,
        "denoising_strength": d.denoising_strength if directed else None,
        "resize_mode": d.resize_mode if init is not None and d.resize_mode != "Just resize" else None,
        "inpaint": inpaint,
    }


_UNIT_DEFAULTS: dict[str, Any] = {"module": "none", "weight": 1.0, "guidance_start": 0.0, "guidance_end": 1.0}
CONTROL_CHOICES = ("keep", "new", "none")


def _check_unit(panel_id: str, d: Direction, count: int) -> None:
    """The form's unit index, checked here: the page only offers good ones, but a stale page (the
    story edited elsewhere) or a hand-made request may name one the panel no longer has."""
    if d.control not in CONTROL_CHOICES:
        raise StoryboardError(
            f"Direct: control must be one of {', '.join(CONTROL_CHOICES)}, not {d.control!r}."
        )
    if not 0 <= d.control_unit <= count:
        have = f"control[0] to control[{count - 1}]" if count else "none"
        raise StoryboardError(
            f"Direct: panel {panel_id} has {count} ControlNet unit(s) ({have}); there is no "
            f"control[{d.control_unit}] to edit (control[{count}] adds one). Reload the page to see "
            "the panel's units as the story file has them now."
        )


def _control(
    loaded: LoadedStory, panel: Any, d: Direction, picture: str | None
) -> list[dict[str, Any]] | None:
    """The panel's ``control:`` list with unit ``d.control_unit`` as the form says: changed,
    replaced, removed or (at the list's length) added; the unit's other fields, and the other
    units, as they were. None: no key (the story's default units)."""
    dump = [u.model_dump(mode="json", exclude_unset=True) for u in panel_control(loaded, panel)]
    own = None if panel.control is None else dump
    k = d.control_unit
    _check_unit(str(panel.id), d, len(dump))
    if d.control == "none" or (d.control == "keep" and k == len(dump)):
        new = [u for i, u in enumerate(dump) if i != k]  # at the adding index: nothing added
    else:
        old = dump[k] if k < len(dump) else {}
        image = picture if d.control == "new" else old.get("image")
        if image is None:
            raise StoryboardError("Direct: no control picture was uploaded for this panel.")
        unit: dict[str, Any] = {
            "image": str(image),
            "module": d.control_module,
            "model": d.control_model or "none",
        }
        unit |= {
            "weight": d.control_weight,
            "guidance_start": d.guidance_start,
            "guidance_end": d.guidance_end,
        }
        # The unit's other fields (control mode, resize mode...) as they were; defaults left unwritten.
        unit = old | unit
        # A default the story did not write stays unwritten; one it wrote stays written.
        unit = {key: v for key, v in unit.items() if key in old or _UNIT_DEFAULTS.get(key, object()) != v}
        new = [*dump[:k], unit, *dump[k + 1 :]]
    if new == dump:
        return own  # unchanged: as written (None keeps following the story's default units)
    defaults = loaded.panel_render[str(panel.id)].control
    # An empty own list means "no units"; with no default units, no key says the same, shorter.
    return new if new or defaults else None


def map_index(d: Direction, j: int) -> int:
    """The panel's unit index (as the page lists them) of unit `j` of the panel as directed: a
    removed unit shifts the ones after it."""
    removed = d.control == "none" and d.control_unit <= j
    return j + 1 if removed else j


def _staged(folder: Path, d: Direction) -> dict[str, Path]:
    out = {}
    for role in ROLES:
        if getattr(d, role) == "new":
            path = folder / f"{role}.png"
            if not path.is_file():
                raise StoryboardError(f"Direct: no {role} picture was uploaded for this panel.")
            out[role] = path
    return out


def _directed(story: Path, out: Path, panel_id: str, d: Direction, *, draft: bool) -> tuple[Path, PanelJob]:
    """The staging folder and the panel's job as directed (the story file untouched)."""
    loaded = load_story(story)
    folder = stage_dir(loaded, out, panel_id, draft=draft)
    staged = {role: str(path) for role, path in _staged(folder, d).items()}
    text = story.read_text(encoding="utf-8")
    new_text = direct_panel_text(text, story, panel_id, _settings(loaded, panel_id, d, staged))
    directed = load_story_text(new_text, story)
    return folder, next(j for j in plan(directed) if j.panel_id == panel_id)


def preview(story: Path, out: Path, renderer: Renderer, panel_id: str, d: Direction, *, draft: bool) -> Path:
    """Render the panel as directed into ``direct/<panel>/preview.png``; the story is untouched."""
    folder, job = _directed(story, out, panel_id, d, draft=draft)
    return render_one(output_dir(load_story(story), out, draft=draft), renderer, job, folder / "preview.png")


def map_name(k: int) -> str:
    """The staged map of the panel's unit `k` (its index as the page lists the units)."""
    return f"control-map-{k}.png"


def control_maps(story: Path, out: Path, panel_id: str, d: Direction, *, draft: bool) -> list[Path]:
    """Each unit's map as its ControlNet reads it in the first pass (the renderer's own
    preprocess: ``detect`` then ``fit_map``), into ``direct/<panel>/control-map-<k>.png`` with `k`
    the unit's index as the page lists them (``map_index``); older maps are removed, so a unit
    the direction removes shows none."""
    from storyboard.render.control.files import check_module
    from storyboard.render.control.preprocess import detect, fit_map

    folder, job = _directed(story, out, panel_id, d, draft=draft)
    for old in folder.glob("control-map*.png") if folder.is_dir() else ():
        old.unlink()
    for unit in job.control:
        check_module(unit)  # a preprocessor needing weights: the renderer's sentence, before any map
    root = output_dir(load_story(story), out, draft=draft)
    first = (job.settings.width, job.settings.height)
    written = []
    for j, unit in enumerate(job.control):
        image = load_input_image(job.input_image(f"control {j}").path)
        fitted = fit_map(detect(image, unit, first), first, unit.resize_mode)
        buf = io.BytesIO()
        Image.fromarray(fitted).save(buf, format="PNG")
        written.append(write_bytes(root, folder / map_name(map_index(d, j)), buf.getvalue()))
    return written


def preview_path(story: Path, out: Path, panel_id: str, *, draft: bool) -> Path | None:
    try:
        path = stage_dir(load_story(story), out, panel_id, draft=draft) / "preview.png"
    except StoryboardError:
        return None
    return path if path.is_file() else None


def keep_text(story: Path, out: Path, panel_id: str, d: Direction, *, draft: bool) -> str:
    """The story text with the direction kept: staged pictures copied beside the story (in
    ``inputs/``), the keys written with paths relative to the story."""
    loaded = load_story(story)
    folder = stage_dir(loaded, out, panel_id, draft=draft)
    kept: dict[str, str] = {}
    for role, path in _staged(folder, d).items():
        rel = Path(INPUTS_DIR) / f"{panel_id}-{role}.png"
        atomic_write_bytes(story.parent / rel, path.read_bytes(), root=story.parent)
        kept[role] = rel.as_posix()
    text = story.read_text(encoding="utf-8")
    return direct_panel_text(text, story, panel_id, _settings(loaded, panel_id, d, kept))


def discard(story: Path, out: Path, panel_id: str, *, draft: bool) -> None:
    """Forget the staged pictures and the preview."""
    folder = stage_dir(load_story(story), out, panel_id, draft=draft)
    if folder.is_dir():
        shutil.rmtree(folder)
