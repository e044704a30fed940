"""What the page shows, read fresh from the story file and the output folder on every request: the
story file is the source of truth, so an edit made in a text editor shows on the next reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from storyboard.app.build import output_dir
from storyboard.app.review_ops import story_version
from storyboard.app.store import PanelStore
from storyboard.errors import StoryboardError
from storyboard.jobs import MAX_SEED, Manifest, PanelJob
from storyboard.story.load import LoadedStory, load_story
from storyboard.story.plan import plan

MAX_CANDIDATES_SHOWN = 12
DEFAULT_CANDIDATES = 3  # the page's candidate count until the user asks for another


@dataclass(frozen=True)
class FileRef:
    """A file under the output folder: its path there and a stamp that changes when it does."""

    rel: str
    stamp: int

    @property
    def url(self) -> str:
        return f"/files/{self.rel}?v={self.stamp}"


@dataclass(frozen=True)
class Score:
    character: str
    distance: float | None
    threshold: float
    off_model: bool
    missing: bool


@dataclass(frozen=True)
class Line:
    speaker: str
    text: str
    kind: str


@dataclass(frozen=True)
class FaceBox:
    """A box the face detailer found in the shown picture: whose it was (None: nobody), where (in
    pixels, and as percentages of the picture for the overlay), the seed it got and the next one."""

    character: str | None
    label: str
    box: tuple[int, int, int, int]
    left: float
    top: float
    width: float
    height: float
    seed: int | None

    @property
    def next_seed(self) -> int | None:
        return None if self.seed is None else (self.seed + 1) % (MAX_SEED + 1)


@dataclass
class PanelView:
    id: str
    page: int
    index: int
    scene: str
    caption: str
    characters: list[str]
    dialogue: list[Line]
    seed: int
    seed_in_file: bool
    settings: list[tuple[str, str]]
    image: FileRef | None = None
    image_seed: int | None = None
    stale: bool = False  # the image was made from other prompt words than the file has now
    preview: bool = False  # the image is a reroll with another seed than the file's (keep it: pick)
    candidates: list[tuple[int, FileRef]] = field(default_factory=list)  # in the order rendered
    candidate_count: int = DEFAULT_CANDIDATES  # the count of the last batch asked for
    scores: list[Score] = field(default_factory=list)
    faces: list[FaceBox] = field(default_factory=list)  # the detailer's boxes, from the PNG's infotext
    occm: float | None = None
    flagged: bool = False


@dataclass
class StoryView:
    title: str
    story: Path
    version: str
    pages: list[tuple[int, FileRef]]
    panels: list[PanelView]
    downloads: list[FileRef]
    check: str | None  # a line about the consistency check, when it ran
    problem: str | None = None  # the story file does not load: this says why


def _ref(root: Path, path: Path) -> FileRef | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return FileRef(path.relative_to(root).as_posix(), st.st_mtime_ns)


def _settings(job: PanelJob) -> list[tuple[str, str]]:
    s = job.settings
    size = f"{job.size[0]}x{job.size[1]}"
    if job.output_size != job.size:
        size += f" → {job.output_size[0]}x{job.output_size[1]}"
    rows = [("model", s.model), ("sampler", f"{s.sampler}, {s.steps} steps"), ("CFG", f"{s.cfg_scale:g}")]
    rows += [("size", size), ("clip skip", str(s.clip_skip))]
    if job.lora_set:
        rows.append(("LoRA", ", ".join(f"{u.name}:{u.te:g}" for u in job.lora_set)))
    return rows


def _faces(path: Path, names: dict[str, str]) -> list[FaceBox]:
    """The detailer's boxes, read back from the picture's infotext ("Detail faces")."""
    from PIL import Image

    from storyboard.render.detail_pass import detail_faces

    try:
        with Image.open(path) as img:
            (w, h), text = img.size, str(img.info.get("parameters", ""))
    except OSError:
        return []
    out = []
    for f in detail_faces(text):
        x0, y0, x1, y1 = f.box
        label = names.get(f.character, f.character) if f.character is not None else "nobody"
        pct = (100 * x0 / w, 100 * y0 / h, 100 * (x1 - x0) / w, 100 * (y1 - y0) / h)
        out.append(FaceBox(f.character, label, f.box, *pct, f.seed))
    return out


def _candidates(root: Path, panel_id: str) -> list[tuple[int, FileRef]]:
    folder = root / "candidates" / panel_id
    found: list[tuple[int, FileRef]] = []
    for f in folder.glob("seed-*.png") if folder.is_dir() else []:
        ref = _ref(root, f)
        if ref and f.stem[5:].isdigit():
            found.append((int(f.stem[5:]), ref))
    # The newest ones, shown in the order they were written: the order they were rendered.
    found.sort(key=lambda c: -c[1].stamp)
    return sorted(found[:MAX_CANDIDATES_SHOWN], key=lambda c: c[1].stamp)


def _check(root: Path, panels: dict[str, PanelView]) -> str | None:
    report_path = root / "check" / "report.json"
    if not report_path.is_file():
        return None
    from storyboard.check.types import CheckReport

    try:
        report = CheckReport.model_validate_json(report_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return f"check/report.json could not be read ({type(exc).__name__}); run storyboard check again"
    thresholds = {c.id: c.threshold for c in report.characters}
    for p in report.panels:
        if p.panel_id in panels:
            panels[p.panel_id].occm = p.occm
    for a in report.appearances:
        view = panels.get(a.panel_id)
        if view is None:
            continue
        score = Score(a.character, a.distance, thresholds.get(a.character, 0.0), a.off_model, a.box is None)
        view.scores.append(score)
        view.flagged = view.flagged or a.off_model
    flagged = len(report.flagged_panels)
    return f"consistency check ({report.backend}): {flagged} panel(s) flagged off-model"


def story_view(story: Path, out: Path, *, draft: bool = False) -> StoryView:
    version = story_version(story)
    try:
        loaded = load_story(story)
        jobs = plan(loaded)
    except StoryboardError as exc:
        return StoryView(story.stem, story, version, [], [], [], None, problem=str(exc))
    return _view(loaded, jobs, out, version, draft)


def _view(loaded: LoadedStory, jobs: list[PanelJob], out: Path, version: str, draft: bool) -> StoryView:
    root = output_dir(loaded, out, draft=draft)
    store = PanelStore(root)
    try:
        manifest = store.read_manifest()
    except StoryboardError:
        manifest = Manifest()
    by_id = {j.panel_id: j for j in jobs}
    panels: dict[str, PanelView] = {}
    for pi, ni, p in loaded.story.panels():
        assert p.id is not None
        job = by_id[p.id]
        names = [loaded.story.characters[c].name or c for c in p.characters if c in loaded.story.characters]
        view = PanelView(
            id=p.id,
            page=pi,
            index=ni,
            scene=p.scene,
            caption=p.caption or "",
            characters=names,
            dialogue=[Line(d.speaker or "", d.text, d.kind) for d in p.dialogue],
            seed=job.seed,
            seed_in_file=p.seed is not None if p.inpaint is None else p.inpaint.seed is not None,
            settings=_settings(job),
            image=_ref(root, store.panel_path(p.id)),
            candidates=_candidates(root, p.id),
        )
        record = manifest.panels.get(p.id)
        if record is not None and view.image is not None:
            view.image_seed = record.seed
            view.stale = record.positive != job.positive
            view.preview = not view.stale and record.seed != job.seed
        if view.image is not None and job.detail is not None:
            named = {
                c: loaded.story.characters[c].name or c for c in p.characters if c in loaded.story.characters
            }
            view.faces = _faces(store.panel_path(p.id), named)
        panels[p.id] = view
    pages = []
    for f in sorted((root / "pages").glob("page-*.png")) if (root / "pages").is_dir() else []:
        ref = _ref(root, f)
        if ref and f.stem[5:].isdigit():
            pages.append((int(f.stem[5:]), ref))
    downloads = [r for f in (root / f"{root.name}.pdf", root / f"{root.name}.cbz") if (r := _ref(root, f))]
    check = _check(root, panels)
    return StoryView(loaded.story.title, loaded.path, version, pages, list(panels.values()), downloads, check)
