"""The review page's HTTP side: FastAPI routes answering with HTML fragments that htmx swaps in.

Every route is a thin shell: reads go through `view.story_view`, writes through `storyboard.app`
(review_ops for version-checked story edits and picks) and renders through the session's one
`RenderQueue`. Guards live in `security`; this module only applies them to each request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape

from storyboard.app import review_ops
from storyboard.app.build import output_dir
from storyboard.errors import StoryboardError
from storyboard.review import security
from storyboard.review.direct import add_direct_routes
from storyboard.review.view import PanelView, StoryView, story_view
from storyboard.review.worker import Job, RenderQueue
from storyboard.story.edit import LineEdit
from storyboard.story.load import load_story

HERE = Path(__file__).parent
MAX_CANDIDATES = 16
# htmx swaps 2xx by default only; our 404/409/422 answers carry a sentence meant to be shown.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass
class Session:
    story: Path
    out: Path
    queue: RenderQueue
    token: str
    hosts: set[str] | None  # Host headers answered; None: any (bound beyond loopback on purpose)
    draft: bool = False  # drafts: the page shows and serves output/<story>/draft/


def dom_id(panel_id: str) -> str:
    """An element id for a panel: ids like p1.2 would read as CSS classes in a selector."""
    return panel_id.encode().hex()


def create_app(session: Session) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    # Autoescape everything: story text is the user's, and a scene may well contain "<".
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["dom_id"] = dom_id
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = request.headers.get("host", "")
        if session.hosts is not None and host not in session.hosts:
            return PlainTextResponse(f"Host {host!r} is not served here.", status_code=400)
        if request.method not in ("GET", "HEAD") and not security.token_ok(
            session.token, request.headers.get(security.TOKEN_HEADER)
        ):
            return PlainTextResponse("Missing or wrong session token; reload the page.", status_code=403)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(token=session.token, **ctx), status_code=status)

    def view() -> StoryView:
        return story_view(session.story, session.out, draft=session.draft)

    def panel_of(v: StoryView, panel_id: str) -> PanelView:
        for p in v.panels:
            if p.id == panel_id:
                return p
        load_story(session.story).story.panel(panel_id)  # a sentence with suggestions
        raise StoryboardError(f"No panel {panel_id!r} in the story.")

    def zone(panel_id: str, *, oob: bool = False, status: int = 200, extra: str = "") -> HTMLResponse:
        v = view()
        p = panel_of(v, panel_id)
        return page("_render.html", status, p=p, job=job_for(p), oob=oob, extra=extra)

    def job_for(p: PanelView) -> Job | None:
        batch = session.queue.latest_for(p.id, kind="candidates")
        if batch is not None:
            # The session's latest batch last, in the order its files were written (a candidate
            # already on disk keeps its old file time); older candidates before it, oldest first.
            order = {s: i for i, s in enumerate(batch.finished)}
            p.candidates.sort(key=lambda c: order.get(c[0], -1))
            p.candidate_count = len(batch.seeds)  # the count the user asked for, not the default
        return session.queue.latest_for(p.id)

    def error(message: str, target: str, status: int) -> HTMLResponse:
        response = page("_message.html", status, message=message, kind="error")
        response.headers["HX-Retarget"] = target
        response.headers["HX-Reswap"] = "innerHTML"
        return response

    def status_stamp(v_page: str) -> str:
        return f"{session.queue.stamp}.{v_page == review_ops.story_version(session.story)}"

    def pages_stamp(v: StoryView) -> str:
        return str(hash((tuple((n, r.stamp) for n, r in v.pages), tuple(r.stamp for r in v.downloads))))

    async def form(request: Request) -> dict[str, list[str]]:
        body = (await request.body()).decode("utf-8")
        # Browsers send a textarea's line breaks as CRLF; the story file uses LF.
        return {
            k: [x.replace("\r\n", "\n") for x in v] for k, v in parse_qs(body, keep_blank_values=True).items()
        }

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        v = view()
        jobs = {p.id: job_for(p) for p in v.panels}
        return page(
            "index.html", v=v, jobs=jobs, queue=session.queue, status_since=status_stamp(v.version),
            pages_since=pages_stamp(v), stale_file=False,
        )  # fmt: skip

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # browsers ask; an empty answer keeps the console clean

    @app.get("/fragment/status", response_class=HTMLResponse)
    def status(since: str = "", version: str = "") -> Response:
        if since == status_stamp(version):
            return Response(status_code=204)  # nothing new: htmx keeps what it shows
        stale = version != review_ops.story_version(session.story)
        return page("_status.html", queue=session.queue, status_since=status_stamp(version), stale_file=stale)

    @app.get("/fragment/pages", response_class=HTMLResponse)
    def pages(since: str = "") -> Response:
        v = view()
        if since == pages_stamp(v):
            return Response(status_code=204)
        return page("_pages.html", v=v, pages_since=pages_stamp(v))

    @app.get("/fragment/panel/{panel_id}", response_class=HTMLResponse)
    def panel_zone(panel_id: str) -> HTMLResponse:
        try:
            return zone(panel_id)
        except StoryboardError as exc:
            return page("_message.html", 404, message=str(exc), kind="error")

    @app.get("/files/{rel:path}")
    def files(rel: str) -> Response:
        try:
            root = output_dir(load_story(session.story), session.out, draft=session.draft)
        except StoryboardError:
            return PlainTextResponse("The story file does not load; nothing to serve.", status_code=404)
        path = security.served_file(root, rel)
        if path is None:
            return PlainTextResponse("Not found in the output folder.", status_code=404)
        return FileResponse(path)

    def queue_and_show(panel_id: str, submit: Callable[[], Job]) -> HTMLResponse:
        try:
            submit()
            return zone(panel_id)
        except StoryboardError as exc:
            return error(str(exc), f"#rm-{dom_id(panel_id)}", 422)

    @app.post("/panel/{panel_id}/reroll", response_class=HTMLResponse)
    def reroll(panel_id: str) -> HTMLResponse:
        return queue_and_show(panel_id, lambda: session.queue.submit("reroll", panel_id))

    @app.post("/panel/{panel_id}/render", response_class=HTMLResponse)
    def render(panel_id: str) -> HTMLResponse:
        return queue_and_show(panel_id, lambda: session.queue.submit("render", panel_id))

    @app.post("/panel/{panel_id}/candidates", response_class=HTMLResponse)
    async def candidates(panel_id: str, request: Request) -> HTMLResponse:
        raw = (await form(request)).get("count", ["3"])[0]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_CANDIDATES:
            return error(
                f"Candidates: give a number from 1 to {MAX_CANDIDATES}.", f"#rm-{dom_id(panel_id)}", 422
            )
        return queue_and_show(panel_id, lambda: session.queue.submit("candidates", panel_id, int(raw)))

    @app.post("/panel/{panel_id}/pick", response_class=HTMLResponse)
    async def pick(panel_id: str, request: Request) -> HTMLResponse:
        data = await form(request)
        seed, version = data.get("seed", [""])[0], data.get("version", [""])[0]
        target = f"#rm-{dom_id(panel_id)}"
        if not seed.isdigit():
            return error("Pick: the seed must be a whole number.", target, 422)
        try:
            new_version = review_ops.pick_checked(session.story, panel_id, int(seed), version=version)
        except review_ops.StaleStoryError as exc:
            return error(str(exc), target, 409)
        except StoryboardError as exc:
            return error(str(exc), target, 422)
        # The picked render is in the store: this publishes it and lays the pages out, no new render.
        session.queue.submit("render", panel_id)
        return zone(panel_id, extra=version_input(new_version))

    @app.post("/panel/{panel_id}/face", response_class=HTMLResponse)
    async def redraw_face(panel_id: str, request: Request) -> HTMLResponse:
        """Re-draw one face of the detailer: its new seed into the story, then the panel renders
        again (the panel itself from the same seed: only that face changes)."""
        data = await form(request)
        seed, version = data.get("seed", [""])[0], data.get("version", [""])[0]
        character = data.get("character", [""])[0]
        target = f"#rm-{dom_id(panel_id)}"
        if not seed.isdigit():
            return error("Re-draw face: the seed must be a whole number.", target, 422)
        try:
            new_version = review_ops.redraw_face(
                session.story, panel_id, character, int(seed), version=version
            )
        except review_ops.StaleStoryError as exc:
            return error(str(exc), target, 409)
        except StoryboardError as exc:
            return error(str(exc), target, 422)
        session.queue.submit("render", panel_id)
        return zone(panel_id, extra=version_input(new_version))

    @app.post("/panel/{panel_id}/edit", response_class=HTMLResponse)
    async def edit(panel_id: str, request: Request) -> HTMLResponse:
        data = await form(request)
        target = f"#m-{dom_id(panel_id)}"
        speakers, texts = data.get("speaker", []), data.get("text", [])
        if len(speakers) != len(texts):
            return error("Edit: each dialogue line needs a speaker field and a text field.", target, 422)
        try:
            new_version = review_ops.edit_panel(
                session.story,
                panel_id,
                version=data.get("version", [""])[0],
                scene=data["scene"][0] if "scene" in data else None,
                caption=data["caption"][0] if "caption" in data else None,
                dialogue=[LineEdit(s or None, t) for s, t in zip(speakers, texts, strict=True)] or None,
            )
        except review_ops.StaleStoryError as exc:
            return error(str(exc), target, 409)
        except StoryboardError as exc:
            return error(str(exc), target, 422)
        v = view()
        p = panel_of(v, panel_id)
        rendered = bytes(zone(panel_id, oob=True).body).decode()
        return page(
            "_edit.html", p=p, message="Saved to the story file.", extra=version_input(new_version) + rendered
        )

    @app.post("/layout", response_class=HTMLResponse)
    def relayout() -> HTMLResponse:
        session.queue.submit("layout")
        return page("_status.html", queue=session.queue, status_since="", stale_file=False)

    @app.post("/build", response_class=HTMLResponse)
    def build() -> HTMLResponse:
        session.queue.submit("build")
        response = page("_status.html", queue=session.queue, status_since="", stale_file=False)
        response.headers["HX-Refresh"] = "true"  # every panel's area starts following the build
        return response

    def version_input(version: str) -> str:
        # Out-of-band: the page's one version field, which every story write sends along.
        field = '<input type="hidden" id="story-version" name="version" value="{}" hx-swap-oob="true">'
        return field.format(escape(version))

    add_direct_routes(app, session, page, form, dom_id)
    return app
