"""The check's report: check/report.json (every number), check/index.html (a page to look at), and a
summary table for the terminal."""

from __future__ import annotations

import io
from pathlib import Path

from jinja2 import Environment, select_autoescape
from PIL import Image
from rich.table import Table

from storyboard.check.images import load_rgb
from storyboard.check.types import CharacterScore, CheckInput, CheckReport, FracBox
from storyboard.writes import atomic_write_bytes, atomic_write_text

THUMB_HEIGHT = 160
PANEL_THUMB_HEIGHT = 72


def _thumb(src: Path, box: tuple[int, int, int, int] | None, dst: Path, height: int = THUMB_HEIGHT) -> None:
    image = load_rgb(Image.open(src))
    if box is not None:
        image = image.crop(box)
    w = max(1, round(image.width * height / max(1, image.height)))
    buf = io.BytesIO()
    image.resize((w, height), Image.Resampling.LANCZOS).save(buf, format="PNG")
    atomic_write_bytes(dst, buf.getvalue())


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def heat_color(distance: float | None, threshold: float) -> str:
    """Green when far under the threshold, through yellow, to red at and past it."""
    if distance is None:
        return "#d0d0d0"
    r = max(0.0, min(1.0, distance / threshold if threshold > 0 else 1.0))
    hue = 120 * (1 - r)
    return f"hsl({hue:.0f}, 70%, {80 - 15 * r:.0f}%)"


# The page template sits next to this module (package data) so it can be edited as HTML.
TEMPLATE = Path(__file__).with_name("report.html.j2")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _region(box: FracBox | None) -> str:
    return "-" if box is None else f"x {box[0]:.2f}-{box[2]:.2f}, y {box[1]:.2f}-{box[3]:.2f}"


def write_report(report: CheckReport, inp: CheckInput) -> dict[str, Path]:
    """Crops, reference thumbnails, report.json and index.html under inp.out_dir."""
    out = inp.out_dir
    images = {p.panel_id: p.image for p in inp.panels}
    for a in report.appearances:
        if a.box is not None:
            rel = f"crops/{_safe(a.panel_id)}--{_safe(a.character)}.png"
            _thumb(images[a.panel_id], a.box, out / rel)
            a.crop = rel
    thumbs: dict[str, str] = {}
    for p in inp.panels:
        thumbs[p.panel_id] = f"panels/{_safe(p.panel_id)}.png"
        _thumb(p.image, None, out / thumbs[p.panel_id], PANEL_THUMB_HEIGHT)
    refs: dict[str, list[str]] = {}
    for cid, c in inp.characters.items():
        for i, ref in enumerate(c.references):
            rel = f"refs/{_safe(cid)}-{i}.png"
            _thumb(ref, None, out / rel)
            refs.setdefault(cid, []).append(rel)
    json_path = out / "report.json"
    atomic_write_text(json_path, report.model_dump_json(indent=2) + "\n")
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        r=report,
        flagged=report.flagged_panels,
        missing=sum(1 for a in report.appearances if a.box is None),
        # Outside its region is shown, not flagged: identity decides on-model; the region only helps
        # tell characters apart, and a figure may drift across a region edge and still be right.
        outside=sum(1 for a in report.appearances if a.in_region is False),
        regional=[a for a in report.appearances if a.region is not None],
        names={c.id: c.name for c in report.characters},
        region=_region,
        cells={(a.panel_id, a.character): a for a in report.appearances},
        refs=refs,
        thumbs=thumbs,
        color=heat_color,
        fmt=_fmt,
    )
    html_path = out / "index.html"
    atomic_write_text(html_path, html)
    return {"json": json_path, "html": html_path}


def read_report(path: Path) -> CheckReport:
    return CheckReport.model_validate_json(path.read_text(encoding="utf-8"))


SUMMARY_COLUMNS = ("character", "anchor", "panels", "self", "cross", "threshold", "off-model", "missing")


def _threshold_cell(report: CheckReport, c: CharacterScore) -> str:
    source = f"{report.backend} default" if c.threshold_source == "backend default" else c.threshold_source
    return f"{c.threshold:.3f} ({source})"


def summary_rows(report: CheckReport) -> list[tuple[str, ...]]:
    """Per character: panels, self/cross similarity, threshold and its source, each off-model panel with
    its distance, and the panels it was not found in (cells in SUMMARY_COLUMNS order)."""
    rows: list[tuple[str, ...]] = []
    for c in report.characters:
        mine = [a for a in report.appearances if a.character == c.id]
        off = [f"{a.panel_id} ({_fmt(a.distance)})" for a in mine if a.off_model]
        missing = [a.panel_id for a in mine if a.box is None]
        rows.append(
            (
                c.name,
                c.anchor,
                str(len(c.panels)),
                _fmt(c.self_similarity),
                _fmt(c.cross_similarity),
                _threshold_cell(report, c),
                ", ".join(off) or "-",
                ", ".join(missing) or "-",
            )
        )
    return rows


def summary_title(report: CheckReport) -> str:
    return f"{report.title}: character check ({report.backend})"


def summary_table(report: CheckReport) -> Table:
    """The summary for a terminal, whose width rich knows."""
    table = Table(title=summary_title(report))
    for col in SUMMARY_COLUMNS:
        table.add_column(col, overflow="fold")
    for row in summary_rows(report):
        table.add_row(*row)
    return table


def summary_text(report: CheckReport) -> list[str]:
    """The summary for a pipe or a file: the same rows as plain lines, columns padded, nothing wrapped.

    Piped, rich assumes 80 columns and folds cells mid-word ("prototyp / e", "p2. / 1"), which breaks
    both reading and grep; a row per line keeps each character's panel ids and scores whole.
    """
    rows = [SUMMARY_COLUMNS, *summary_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(SUMMARY_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return [summary_title(report), *lines]


def region_notes(report: CheckReport) -> list[str]:
    """One line per character found outside its region in a regional panel, naming those panels.

    Shown, not flagged: identity decides on-model, and a figure may drift over a region's edge and still
    be right; but a character on the wrong side of a two-character panel is worth a look.
    """
    notes = []
    for c in report.characters:
        outside = [a.panel_id for a in report.appearances if a.character == c.id and a.in_region is False]
        if outside:
            notes.append(f"{c.name} outside its region in {', '.join(outside)}")
    return notes
