"""The check's report: check/report.json (every number), check/index.html (a page to look at), and a
summary table for the terminal."""

from __future__ import annotations

import io
from pathlib import Path

from jinja2 import Environment, select_autoescape
from PIL import Image
from rich.table import Table

from storyboard.check.images import load_rgb
from storyboard.check.types import CheckInput, CheckReport
from storyboard.store import atomic_write_bytes, atomic_write_text

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


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ r.title }}: character check</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { margin: 0 0 4px; } .meta { color: #555; margin-bottom: 16px; }
.summary { font-size: 16px; margin: 12px 0 20px; }
.bad { color: #b00020; font-weight: 600; } .ok { color: #1b7f3b; font-weight: 600; }
table.heat { border-collapse: separate; border-spacing: 3px; margin-bottom: 28px; }
table.heat th { font-weight: 600; padding: 2px 6px; text-align: center; }
table.heat th.row { text-align: right; }
table.heat th img { height: 72px; display: block; margin: 0 auto 2px; border: 3px solid transparent; }
table.heat th.flagged img { border-color: #b00020; }
table.heat td { width: 64px; height: 34px; text-align: center; border-radius: 4px;
  font-variant-numeric: tabular-nums; }
td.flag { outline: 3px solid #b00020; outline-offset: -3px; font-weight: 700; }
td.absent { background: repeating-linear-gradient(45deg,#eee,#eee 4px,#fff 4px,#fff 8px); color: #888; }
td.none { background: transparent; }
.sub { display: block; font-size: 11px; color: #666; font-weight: 400; }
.extra { color: #8a5a00; }
.char { margin: 22px 0; } .char h2 { margin: 0 0 2px; font-size: 18px; }
.strip { display: flex; gap: 8px; overflow-x: auto; padding: 6px 0; align-items: flex-end; }
figure { margin: 0; text-align: center; font-size: 12px; min-width: 96px; }
figure img { height: 160px; display: block; margin: 0 auto; border: 3px solid transparent; border-radius: 4px; }
figure.flag img { border-color: #b00020; } figure.ref img { border-color: #3558c4; }
figure.flag figcaption { color: #b00020; font-weight: 700; }
.missing { width: 90px; height: 160px; border: 3px dashed #999; display: flex; align-items: center;
  justify-content: center; color: #777; border-radius: 4px; }
.sep { width: 2px; align-self: stretch; background: #ccc; margin: 0 6px; }
.notes { background: #fff8e1; padding: 8px 12px; border-radius: 4px; }
</style></head><body>
<h1>{{ r.title }}: character check</h1>
<div class="meta">backend {{ r.backend }} ({{ r.backend_model }}), default threshold
{{ "%.3f"|format(r.default_threshold) }} (distance; higher = less alike) &middot;
detector: {{ r.detector or "none (whole panels)" }}</div>
{% if r.notes %}<div class="notes">{% for n in r.notes %}<div>{{ n }}</div>{% endfor %}</div>{% endif %}
<div class="summary">{{ r.panels|length }} panels, {{ r.appearances|length }} character appearances:
{% if flagged %}<span class="bad">{{ flagged|length }} panel(s) off-model: {{ flagged|join(", ") }}</span>
{% else %}<span class="ok">every character on-model</span>{% endif %}
{% if missing %} &middot; <span class="bad">{{ missing }} missing</span>{% endif %}</div>
<h2>Distance to each character's anchor</h2>
<table class="heat"><tr><th></th>{% for p in r.panels %}<th class="{{ 'flagged' if p.panel_id in flagged }}">
<img src="{{ thumbs[p.panel_id] }}" alt="panel {{ p.panel_id }}">{{ p.panel_id }}
<span class="sub">OCCM {{ "%.0f"|format(p.occm) }}{% if p.extra %} <span class="extra">+{{ p.extra }}
extra</span>{% endif %}</span></th>{% endfor %}</tr>
{% for c in r.characters %}<tr><th class="row">{{ c.name }}<span class="sub">&le; {{ "%.3f"|format(c.threshold) }}</span></th>
{% for p in r.panels %}{% set a = cells.get((p.panel_id, c.id)) %}
{% if a is none %}<td class="none"></td>
{% elif a.box is none %}<td class="absent" title="expected, not found">missing</td>
{% else %}<td class="{{ 'flag' if a.off_model }}" style="background: {{ color(a.distance, c.threshold) }}"
 title="{{ c.name }} in {{ p.panel_id }}: distance {{ '%.4f'|format(a.distance) }}">{{ "%.2f"|format(a.distance) }}</td>
{% endif %}{% endfor %}</tr>{% endfor %}</table>
{% for c in r.characters %}<section class="char"><h2>{{ c.name }} <span class="sub">{{ c.id }}</span></h2>
<div>anchor: {{ c.anchor }}{% if c.anchor == "prototype" and c.main_cluster %} (from {{ c.main_cluster|join(", ") }}){% endif %}
&middot; self similarity {{ fmt(c.self_similarity) }} &middot; cross similarity {{ fmt(c.cross_similarity) }}
&middot; threshold {{ "%.3f"|format(c.threshold) }}
{% if c.flagged %}&middot; <span class="bad">off-model in {{ c.flagged|join(", ") }}</span>{% endif %}</div>
<div class="strip">{% for ref in refs.get(c.id, []) %}<figure class="ref"><img src="{{ ref }}" alt="reference">
<figcaption>reference</figcaption></figure>{% endfor %}{% if refs.get(c.id) %}<div class="sep"></div>{% endif %}
{% for a in r.appearances if a.character == c.id %}
{% if a.box is none %}<figure><div class="missing">missing</div><figcaption>{{ a.panel_id }}</figcaption></figure>
{% else %}<figure class="{{ 'flag' if a.off_model }}"><img src="{{ a.crop }}" alt="{{ c.name }} in {{ a.panel_id }}">
<figcaption>{{ a.panel_id }} &middot; {{ "%.3f"|format(a.distance) }}{% if a.off_model %} off-model{% endif %}</figcaption></figure>
{% endif %}{% endfor %}</div></section>{% endfor %}
</body></html>
"""


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


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
    html = env.from_string(_PAGE).render(
        r=report,
        flagged=report.flagged_panels,
        missing=sum(1 for a in report.appearances if a.box is None),
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


def summary_table(report: CheckReport) -> Table:
    """Per character: panels, self/cross similarity, threshold, and where it is off-model or missing."""
    table = Table(title=f"{report.title}: character check ({report.backend})")
    for col in ("character", "anchor", "panels", "self", "cross", "threshold", "off-model", "missing"):
        table.add_column(col, overflow="fold")
    for c in report.characters:
        missing = [a.panel_id for a in report.appearances if a.character == c.id and a.box is None]
        table.add_row(
            c.name,
            c.anchor,
            str(len(c.panels)),
            _fmt(c.self_similarity),
            _fmt(c.cross_similarity),
            f"{c.threshold:.3f}",
            ", ".join(c.flagged) or "-",
            ", ".join(missing) or "-",
        )
    return table
