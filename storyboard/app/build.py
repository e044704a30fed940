"""plan -> render -> store -> layout, redoing only what changed and keeping every finished panel.

Each panel's job hash covers everything that changes its pixels (the PanelJob's pixel spec plus the
renderer's identity for it: model/VAE/LoRA/embedding file hashes and engine version). A panel whose
hash is in the store is reused; the rest are rendered and written one by one, each atomically, so an
interrupted build resumes where it stopped.

The cache is the record of what is done; the manifest describes it and is rewritten at most once per
MANIFEST_INTERVAL seconds, or 20 times as long as the last rewrite took (and at the end), so a build
of thousands of panels keeps a steady rate. A
build killed in between loses only manifest lines, which the next build rewrites from the cache.

Draft builds go to their own store, output/<story>/draft/, so a draft never replaces a real render,
page, PDF or CBZ.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, PngImagePlugin

from storyboard.app.store import PanelStore
from storyboard.errors import StoryboardError
from storyboard.jobs import Manifest, ManifestLora, ManifestRecord, PanelJob, Renderer, job_hash
from storyboard.layout.contact_sheet import contact_sheet
from storyboard.story.load import LoadedStory
from storyboard.story.plan import plan
from storyboard.writes import safe_child, write_bytes


def png_bytes(image: Image.Image, infotext: str) -> bytes:
    """PNG with WebUI's `parameters` text chunk and nothing time-dependent, so bytes repeat."""
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta, optimize=False, compress_level=6)
    return buf.getvalue()


@dataclass
class BuildReport:
    out_dir: Path
    rendered: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    renderer: str = ""
    layout_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


ProgressFn = Callable[[str, int, int], None]
DRAFT_DIR = "draft"
MANIFEST_INTERVAL = 2.0  # seconds between manifest rewrites during a render


def output_dir(loaded: LoadedStory, out_root: Path, *, draft: bool = False) -> Path:
    """output/<story>/, or its draft/ folder for a draft build. output/<story> itself may be a symlink
    (a folder on another disk); nothing inside it may be (storyboard.writes)."""
    real = Path(os.path.abspath(out_root)) / loaded.slug  # a slug is one safe path component
    return safe_child(real, DRAFT_DIR) if draft else real


def missing_panels(loaded: LoadedStory, store: PanelStore) -> list[str]:
    """Panel ids (story order) with no image in panels/ yet: layout needs every one."""
    return [p.id for _, _, p in loaded.story.panels() if p.id and not store.panel_path(p.id).is_file()]


def build(
    loaded: LoadedStory,
    out_root: Path,
    renderer: Renderer,
    *,
    only: Sequence[str] | None = None,
    seeds: dict[str, int] | None = None,
    layout: bool = True,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
    draft: bool = False,
) -> BuildReport:
    """Render what is missing (or just `only`, with optional seed overrides), then lay out.

    `seeds` renders those panels with other seeds without touching the story file: a preview; the
    panel file then shows that render until the next build (`storyboard pick` makes it permanent).
    """
    out_dir = output_dir(loaded, out_root, draft=draft)
    store = PanelStore(out_dir)
    report = BuildReport(out_dir=out_dir, renderer=renderer.name)
    jobs = plan(loaded)
    if seeds:
        jobs = [replace(j, seed=seeds[j.panel_id]) if j.panel_id in seeds else j for j in jobs]
    hashes = {j.panel_id: job_hash(j, renderer) for j in jobs}
    with store.lock(wait=wait, on_wait=on_wait):
        entries = dict(store.read_manifest().panels)
        selected = [j for j in jobs if only is None or j.panel_id in only]
        todo = [j for j in selected if not store.has(hashes[j.panel_id])]
        for j in selected:
            if store.has(hashes[j.panel_id]):
                report.reused.append(j.panel_id)
                store.publish(j.panel_id, hashes[j.panel_id])
                old = entries.get(j.panel_id)
                if old is None or old.job_hash != hashes[j.panel_id]:
                    entries[j.panel_id] = _record(j, hashes[j.panel_id], store, renderer, None)
        last_write, interval = time.monotonic(), MANIFEST_INTERVAL
        try:
            todo = with_bases(todo, store, renderer)
            for done, result in enumerate(renderer.render(todo), start=1):
                _refuse_nonfinite(result.job, result.image)
                h = hashes[result.job.panel_id]
                if not store.has(h):  # a Ray actor may have stored it already: PNG encoding is not free
                    store.put(h, png_bytes(result.image, result.infotext))
                store.publish(result.job.panel_id, h)
                entries[result.job.panel_id] = _record(result.job, h, store, renderer, result.seconds)
                report.rendered.append(result.job.panel_id)
                report.notes += result.notes  # e.g. the face detailer's detections left alone
                if time.monotonic() - last_write >= interval:
                    started = time.monotonic()
                    store.write_manifest(_manifest(loaded, jobs, entries))
                    last_write = time.monotonic()
                    # A write grows with the book (0.3 s at 10,000 panels): space them so they
                    # never take more than a twentieth of the render, whatever its length.
                    interval = max(MANIFEST_INTERVAL, 20 * (last_write - started))
                if progress:
                    progress(result.job.panel_id, done, len(todo))
        finally:
            # Also on Ctrl-C / SIGTERM, so the manifest names every panel that was kept.
            store.write_manifest(_manifest(loaded, jobs, entries))
        if layout:
            missing = missing_panels(loaded, store)
            if missing:
                report.notes.append(f"layout skipped: panels not rendered yet: {', '.join(missing)}")
            else:
                from storyboard.app.pages import layout_story

                report.layout_files, warnings = layout_story(loaded, out_dir)
                report.notes += warnings
    return report


def with_bases(jobs: Sequence[PanelJob], store: PanelStore, renderer: Renderer) -> list[PanelJob]:
    """The jobs, each inpaint over its panel's own render handed that render's stored file.

    A base render not in the store yet is rendered first and stored under its own job hash (so the
    next build, or a txt2img of the same panel, finds it); the panel file itself is not touched."""
    bases = {job_hash(j.base, renderer): j.base for j in jobs if j.base is not None}
    missing = [b for h, b in bases.items() if not store.has(h)]
    for r in renderer.render(missing):
        _refuse_nonfinite(r.job, r.image)
        h = job_hash(r.job, renderer)
        if not store.has(h):
            store.put(h, png_bytes(r.image, r.infotext))
    out = []
    for j in jobs:
        if j.base is not None and j.img2img is not None:
            path = str(store.cache_path(job_hash(j.base, renderer)))
            j = replace(j, img2img=replace(j.img2img, base_render=path))
        out.append(j)
    return out


def render_one(out_dir: Path, renderer: Renderer, job: PanelJob, dst: Path) -> Path:
    """One job's render (from the store, else rendered and stored) copied to `dst` in `out_dir`;
    the panel file is not touched (a preview)."""
    store = PanelStore(out_dir)
    h = job_hash(job, renderer)
    with store.lock():
        if not store.has(h):
            for r in renderer.render(with_bases([job], store, renderer)):
                _refuse_nonfinite(r.job, r.image)
                if not store.has(h):
                    store.put(h, png_bytes(r.image, r.infotext))
        return store.copy_out(h, dst)


def _refuse_nonfinite(job: PanelJob, image: Image.Image) -> None:
    from storyboard.render.decode import NONFINITE

    if image.info.get(NONFINITE):
        weights = ", ".join(f"{u.name}:{u.te:g}" for u in job.lora_set) or "none"
        raise StoryboardError(
            f"Panel {job.panel_id} rendered as NaN (a black image), so it was not kept.",
            hint=f"lower its LoRA weights ({weights}) or cfg_scale ({job.settings.cfg_scale:g}), "
            "or try another VAE",
        )


def _record(
    job: PanelJob, h: str, store: PanelStore, renderer: Renderer, seconds: float | None
) -> ManifestRecord:
    lora_hashes = renderer.identity(job).lora_hashes
    return ManifestRecord(
        job_hash=h,
        page=job.page,
        index=job.index,
        seed=job.seed,
        positive=job.positive,
        negative=job.negative,
        loras=[
            ManifestLora(name=u.name, te=u.te, unet=u.unet, hash=lora_hashes.get(u.name))
            for u in job.lora_set
        ],
        size=list(job.output_size),
        file=os.path.relpath(store.panel_path(job.panel_id), store.root),
        renderer=renderer.name,
        render_seconds=None if seconds is None else round(seconds, 3),
    )


def _manifest(loaded: LoadedStory, jobs: list[PanelJob], entries: dict[str, ManifestRecord]) -> Manifest:
    order = {j.panel_id: i for i, j in enumerate(jobs)}
    ordered = {k: entries[k] for k in sorted(entries, key=lambda k: order.get(k, 1 << 30)) if k in order}
    return Manifest(story=loaded.story.title, source=str(loaded.path), panels=ordered)


def render_candidates(
    loaded: LoadedStory,
    out_root: Path,
    renderer: Renderer,
    panel_id: str,
    seeds: Sequence[int],
    *,
    draft: bool = False,
    on_each: Callable[[int, Path], None] | None = None,
) -> tuple[list[tuple[int, Path]], Path]:
    """Render one panel with several seeds, side by side in a contact sheet, without changing the panel.

    All seeds not in the store go to the renderer at once, so it can batch them; each candidate's
    file is written (and `on_each(seed, file)` called) as soon as it is there, stored ones first.
    Candidates go into the content-addressed store too, so after `storyboard pick` the next build
    reuses the chosen render instead of rendering it again.
    """
    out_dir = output_dir(loaded, out_root, draft=draft)
    store = PanelStore(out_dir)
    base = next(j for j in plan(loaded) if j.panel_id == panel_id)
    jobs = [replace(base, seed=s) for s in seeds]
    hashes = [job_hash(j, renderer) for j in jobs]
    cand_dir = safe_child(out_dir, "candidates", panel_id)
    files: dict[int, Path] = {}

    def place(seed: int, h: str) -> None:
        files[seed] = store.copy_out(h, cand_dir / f"seed-{seed}.png")
        if on_each:
            on_each(seed, files[seed])

    with store.lock():
        todo = []
        for j, h in zip(jobs, hashes, strict=True):
            if store.has(h):
                place(j.seed, h)
            else:
                todo.append(j)
        for r in renderer.render(with_bases(todo, store, renderer)):
            h = job_hash(r.job, renderer)
            if not store.has(h):  # a Ray actor may have stored it already
                store.put(h, png_bytes(r.image, r.infotext))
            place(r.job.seed, h)
        results = [(s, files[s]) for s in seeds]
        sheet = contact_sheet([(f"seed {s}", p) for s, p in results], title=f"{panel_id}: candidates")
        sheet_path = cand_dir / "sheet.png"
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        write_bytes(out_dir, sheet_path, buf.getvalue())
    return results, sheet_path
