"""The review page's Direct box per panel: attach or replace the init image, draw or upload a mask
(or give a box), preview, keep or discard (app/direct_ops.py does the work; this is the shell).

Pictures arrive as data URLs in the form (the page reads a chosen file, or the drawn mask canvas,
with static/direct.js); no multipart parser is needed. A preview renders on the session's one
render worker like every other render.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.requests import Request
from fastapi.responses import HTMLResponse
from PIL import Image

from storyboard.app import direct_ops, review_ops
from storyboard.app.build import output_dir
from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob
from storyboard.story.control import BUILTIN_MODULES, WEIGHTED_MODULES
from storyboard.story.inputs import panel_control
from storyboard.story.load import load_story
from storyboard.story.plan import plan

DATA_URL = "data:image/"
MAX_PICTURE_BYTES = 32 * 2**20

Page = Callable[..., HTMLResponse]
Form = Callable[[Request], Any]


def _picture(value: str) -> bytes:
    """The bytes of a `data:image/...;base64,` URL (a sentence when it is not one)."""
    head, _, body = value.partition(",")
    if not head.startswith(DATA_URL) or not head.endswith(";base64"):
        raise StoryboardError("Direct: the picture did not arrive as an image (data URL).")
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise StoryboardError("Direct: the picture's data is damaged; choose it again.") from None
    if len(data) > MAX_PICTURE_BYTES:
        raise StoryboardError(f"Direct: pictures up to {MAX_PICTURE_BYTES // 2**20} MB, please.")
    return data


def _direction(data: dict[str, list[str]]) -> direct_ops.Direction:
    def one(key: str, default: str) -> str:
        return data.get(key, [default])[0] or default

    mask = one("mask", "none")
    box = None
    if mask == "box":
        box = [one(k, "") for k in ("x0", "y0", "x1", "y1")]
    return direct_ops.Direction.from_form(
        {
            "init": one("init", "none"),
            "denoising_strength": one("denoising_strength", "0.75"),
            "resize_mode": one("resize_mode", "Just resize"),
            "mask": "new" if mask == "draw" else ("none" if mask == "box" else mask),
            "box": box,
            "mask_blur": one("mask_blur", "4"),
            "masked_content": one("masked_content", "original"),
            "inpaint_full_res": one("inpaint_full_res", "") == "on",
            "padding": one("padding", "32"),
            "control_unit": one("control_unit", "0"),
            "control": one("control", "keep"),
            "control_module": one("control_module", "none"),
            "control_model": one("control_model", ""),
            "control_weight": one("control_weight", "1"),
            "guidance_start": one("guidance_start", "0"),
            "guidance_end": one("guidance_end", "1"),
        }
    )


def _file(root: Path, path: Path) -> tuple[str, int] | None:
    """(path under the output folder, stamp) for the page's /files/ route; None when absent."""
    return (path.relative_to(root).as_posix(), path.stat().st_mtime_ns) if path.is_file() else None


def _mask_size(job: PanelJob) -> tuple[int, int]:
    """A drawn mask's size: the picture it masks (the init image, else the panel's render)."""
    if job.has_input("init"):
        with Image.open(job.input_image("init").path) as img:
            return img.size
    return job.output_size


def _controlnets(story: Path) -> list[str]:
    """The ControlNet names the story's folders (and its WebUI root) hold, for the model list."""
    from storyboard.app.inventory import story_folders
    from storyboard.models.registry import Registry

    try:
        return sorted({f.name for f in Registry(story_folders(story)).files("controlnet")})
    except (StoryboardError, OSError):
        return []


def add_direct_routes(
    app: FastAPI, session: Any, page: Page, form: Form, dom_id: Callable[[str], str]
) -> None:
    """GET /fragment/direct/{id}; POST /panel/{id}/direct/preview, /keep, /discard."""

    def fragment(panel_id: str, *, status: int = 200, message: str = "", extra: str = "") -> HTMLResponse:
        loaded = load_story(session.story)
        panel = loaded.story.panel(panel_id)
        job = next(j for j in plan(loaded) if j.panel_id == panel_id)
        preview = direct_ops.preview_path(session.story, session.out, panel_id, draft=session.draft)
        latest = session.queue.latest_for(panel_id)
        root = output_dir(loaded, session.out, draft=session.draft)
        stage = direct_ops.stage_dir(loaded, session.out, panel_id, draft=session.draft)
        units = panel_control(loaded, panel)
        return page(
            "_direct.html",
            status,
            pid=panel_id,
            panel=panel,
            size=_mask_size(job),
            # What the mask is drawn over: the panel's render, shown under the canvas.
            under=_file(root, root / "panels" / f"{panel_id}.png") if not job.has_input("init") else None,
            preview=_file(root, preview) if preview else None,
            active=latest is not None and latest.kind == "direct" and latest.active,
            failed=latest.error if latest is not None and latest.kind == "direct" else None,
            # The form shows what was last previewed, so Keep keeps what the form says.
            d=latest.direction if preview and latest is not None and latest.kind == "direct" else None,
            # Each ControlNet unit with its preprocessed map (at Preview; the last one: a unit
            # added), and what the form offers.
            units=units,
            own_units=panel.control is not None,
            maps=[_file(root, stage / direct_ops.map_name(k)) for k in range(len(units) + 1)],
            modules=[*BUILTIN_MODULES, *WEIGHTED_MODULES],
            controlnets=_controlnets(session.story),
            message=message,
            extra=extra,
        )

    def refused(panel_id: str, exc: StoryboardError, status: int) -> HTMLResponse:
        return fragment(panel_id, status=status, message=str(exc))

    @app.get("/fragment/direct/{panel_id}", response_class=HTMLResponse)
    def direct_zone(panel_id: str) -> HTMLResponse:
        try:
            return fragment(panel_id)
        except StoryboardError as exc:
            # Loaded with the page: a story that does not load (mid-save in an editor) is said in
            # the box, not answered as a failed load.
            return page("_message.html", 200, message=str(exc), kind="error")

    async def staged(panel_id: str, request: Request) -> tuple[dict[str, list[str]], direct_ops.Direction]:
        data = await form(request)
        for role in direct_ops.ROLES:
            value = data.get(f"{role}_data", [""])[0]
            if value:
                picture = _picture(value)
                direct_ops.stage_picture(
                    session.story, session.out, panel_id, role, picture, draft=session.draft
                )
        return data, _direction(data)

    @app.post("/panel/{panel_id}/direct/preview", response_class=HTMLResponse)
    async def preview(panel_id: str, request: Request) -> HTMLResponse:
        try:
            _, direction = await staged(panel_id, request)
            # The maps first: a preprocessor that cannot run is said before anything renders.
            direct_ops.control_maps(session.story, session.out, panel_id, direction, draft=session.draft)
            session.queue.submit("direct", panel_id, direction=direction)
            return fragment(panel_id)
        except StoryboardError as exc:
            return refused(panel_id, exc, 422)

    @app.post("/panel/{panel_id}/direct/keep", response_class=HTMLResponse)
    async def keep(panel_id: str, request: Request) -> HTMLResponse:
        data = await form(request)
        latest = session.queue.latest_for(panel_id)
        direction = latest.direction if latest is not None and latest.kind == "direct" else None
        try:
            if not isinstance(direction, direct_ops.Direction) or latest is None or latest.active:
                raise StoryboardError("Direct: preview the panel first; Keep keeps what was previewed.")
            version = review_ops.keep_direction(
                session.story, session.out, panel_id, direction,
                version=data.get("version", [""])[0], draft=session.draft,
            )  # fmt: skip
            direct_ops.discard(session.story, session.out, panel_id, draft=session.draft)
        except review_ops.StaleStoryError as exc:
            return refused(panel_id, exc, 409)
        except StoryboardError as exc:
            return refused(panel_id, exc, 422)
        # Kept as previewed: this render finds the preview's picture in the store.
        session.queue.submit("render", panel_id)
        field = '<input type="hidden" id="story-version" name="version" value="{}" hx-swap-oob="true">'
        refresh = (
            f'<div hidden hx-get="/fragment/panel/{panel_id}" hx-trigger="load" '
            f'hx-target="#r-{dom_id(panel_id)}" hx-swap="outerHTML"></div>'
        )
        kept = "Kept: written to the story file."
        return fragment(panel_id, message=kept, extra=field.format(version) + refresh)

    @app.post("/panel/{panel_id}/direct/discard", response_class=HTMLResponse)
    def discard(panel_id: str) -> HTMLResponse:
        try:
            direct_ops.discard(session.story, session.out, panel_id, draft=session.draft)
            return fragment(panel_id, message="Discarded.")
        except StoryboardError as exc:
            return refused(panel_id, exc, 422)
