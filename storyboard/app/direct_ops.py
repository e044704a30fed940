"""Directing a panel from the review page: attach or replace its init image, draw or upload a mask
(or give a box), preview the result, then keep it (the pictures go beside the story, the settings
into the story file) or discard it.

Uploads and previews are staged in the output folder (``direct/<panel>/``), so a preview writes
nothing else; only Keep writes beside the story: ``inputs/<panel>-init.png`` and
``inputs/<panel>-mask.png``, and the panel's ``init_image`` / ``denoising_strength`` /
``resize_mode`` / ``inpaint`` keys (comments kept, version-checked like every page edit). A kept
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
from storyboard.jobs import Renderer
from storyboard.story.edit import direct_panel_text
from storyboard.story.load import LoadedStory, load_story, load_story_text
from storyboard.story.plan import plan
from storyboard.writes import atomic_write_bytes, safe_child, write_bytes

ROLES = ("init", "mask")
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
        "init_image": str(init) if init is not None else None,
        "denoising_strength": d.denoising_strength if directed else None,
        "resize_mode": d.resize_mode if init is not None and d.resize_mode != "Just resize" else None,
        "inpaint": inpaint,
    }


def _staged(folder: Path, d: Direction) -> dict[str, Path]:
    out = {}
    for role in ROLES:
        if getattr(d, role) == "new":
            path = folder / f"{role}.png"
            if not path.is_file():
                raise StoryboardError(f"Direct: no {role} picture was uploaded for this panel.")
            out[role] = path
    return out


def preview(story: Path, out: Path, renderer: Renderer, panel_id: str, d: Direction, *, draft: bool) -> Path:
    """Render the panel as directed into ``direct/<panel>/preview.png``; the story is untouched."""
    loaded = load_story(story)
    folder = stage_dir(loaded, out, panel_id, draft=draft)
    staged = {role: str(path) for role, path in _staged(folder, d).items()}
    text = story.read_text(encoding="utf-8")
    new_text = direct_panel_text(text, story, panel_id, _settings(loaded, panel_id, d, staged))
    directed = load_story_text(new_text, story)
    job = next(j for j in plan(directed) if j.panel_id == panel_id)
    return render_one(output_dir(loaded, out, draft=draft), renderer, job, folder / "preview.png")


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
