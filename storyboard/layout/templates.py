"""Page layout templates: data files, loading, lookup by name and automatic choice.

A template is a YAML or JSON file with either explicit panel rectangles

    panels:            # [x, y, w, h]: fractions of the live area, y from the top, LTR reading order
      - [0, 0, 1, 0.4]

or a list of tiers (top to bottom), each with a height weight and column width weights:

    tiers:
      - {height: 1, columns: [1, 1]}

Panels tile the live area edge to edge; gutters are applied when the page is laid out, so one template
serves every gutter width. Right-to-left pages mirror the rectangles horizontally.

The shipped templates live in the repository's templates/layouts/ (the source) and a byte-identical
copy in storyboard/data/layouts/ (so an installed package works); a test keeps the two in sync.
A user's project can add or override templates in its own templates/layouts/ folder.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from storyboard.errors import StoryboardError

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "layouts"
_EPS = 1e-6

FracRect = tuple[float, float, float, float]


@dataclass(frozen=True)
class Template:
    name: str
    panels: tuple[FracRect, ...]
    description: str = ""
    # A one-panel splash may run its art off the page edge into the bleed.
    bleed: bool = False
    source: Path | None = None

    @property
    def n_panels(self) -> int:
        return len(self.panels)

    def aspects(self, live_aspect: float) -> list[float]:
        """Width/height of each panel on a live area whose width/height is live_aspect."""
        return [(w * live_aspect) / h for (_x, _y, w, h) in self.panels]


def default_template_dirs() -> list[Path]:
    return [PACKAGE_TEMPLATES]


def _tiers_to_panels(tiers: Any, where: str) -> list[FracRect]:
    if not isinstance(tiers, list) or not tiers:
        raise StoryboardError(f"{where}: 'tiers' must be a non-empty list of {{height, columns}}")
    heights = []
    for i, tier in enumerate(tiers):
        if not isinstance(tier, dict) or not isinstance(tier.get("columns"), list) or not tier["columns"]:
            raise StoryboardError(f"{where}: tier {i + 1} needs 'columns: [weights...]'")
        heights.append(float(tier.get("height", 1)))
    total_h = sum(heights)
    panels: list[FracRect] = []
    y = 0.0
    for tier, h in zip(tiers, heights, strict=True):
        cols = [float(c) for c in tier["columns"]]
        if any(c <= 0 for c in cols) or h <= 0:
            raise StoryboardError(f"{where}: tier heights and column weights must be positive")
        x = 0.0
        for c in cols:
            panels.append((x / sum(cols), y / total_h, c / sum(cols), h / total_h))
            x += c
        y += h
    return panels


def parse_template(data: Any, name: str, source: Path | None = None) -> Template:
    where = str(source) if source else f"template {name!r}"
    if not isinstance(data, dict):
        raise StoryboardError(f"{where}: a layout template must be a mapping with 'panels' or 'tiers'")
    unknown = set(data) - {"name", "description", "panels", "tiers", "bleed"}
    if unknown:
        raise StoryboardError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: name, description, panels, tiers, bleed"
        )
    if ("panels" in data) == ("tiers" in data):
        raise StoryboardError(f"{where}: give exactly one of 'panels' or 'tiers'")
    if "tiers" in data:
        panels = _tiers_to_panels(data["tiers"], where)
    else:
        raw = data["panels"]
        if not isinstance(raw, list) or not raw:
            raise StoryboardError(f"{where}: 'panels' must be a non-empty list of [x, y, w, h]")
        panels = []
        for i, r in enumerate(raw):
            if not (isinstance(r, list) and len(r) == 4 and all(isinstance(v, int | float) for v in r)):
                raise StoryboardError(f"{where}: panel {i + 1} must be [x, y, w, h] fractions, got {r!r}")
            panels.append((float(r[0]), float(r[1]), float(r[2]), float(r[3])))
    for i, (x, y, w, h) in enumerate(panels):
        if w <= 0 or h <= 0 or x < -_EPS or y < -_EPS or x + w > 1 + _EPS or y + h > 1 + _EPS:
            raise StoryboardError(
                f"{where}: panel {i + 1} [{x}, {y}, {w}, {h}] must lie within the page (0..1)"
            )
    for i, a in enumerate(panels):
        for j in range(i + 1, len(panels)):
            b = panels[j]
            x_overlap = a[0] + _EPS < b[0] + b[2] and b[0] + _EPS < a[0] + a[2]
            if x_overlap and a[1] + _EPS < b[1] + b[3] and b[1] + _EPS < a[1] + a[3]:
                raise StoryboardError(f"{where}: panels {i + 1} and {j + 1} overlap")
    return Template(
        name=str(data.get("name", name)),
        panels=tuple(panels),
        description=str(data.get("description", "")),
        bleed=bool(data.get("bleed", False)),
        source=source,
    )


def load_template_file(path: Path) -> Template:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else YAML(typ="safe").load(text)
    except (OSError, json.JSONDecodeError, YAMLError) as exc:
        raise StoryboardError(f"cannot read layout template {path}: {exc}") from exc
    return parse_template(data, path.stem, path)


def _layout_dir(d: Path) -> Path:
    # Accept a templates root (…/templates, holding layouts/ and prompts/) or the layouts folder itself.
    return d / "layouts" if (d / "layouts").is_dir() else d


def list_templates(template_dirs: Iterable[Path] | None = None) -> dict[str, Template]:
    """All templates by name. The first directory that defines a name wins (same rule as prompt
    templates: the story's project first), and the shipped templates fill in whatever is left."""
    dirs = [_layout_dir(d) for d in (template_dirs or [])] + [PACKAGE_TEMPLATES]
    found: dict[str, Template] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.iterdir()):
            if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
                tpl = load_template_file(path)
                found.setdefault(tpl.name, tpl)
    return found


def get_template(name: str, templates: dict[str, Template]) -> Template:
    if name in templates:
        return templates[name]
    close = difflib.get_close_matches(name, list(templates), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else None
    raise StoryboardError(
        f"unknown layout template {name!r}; known templates: {', '.join(sorted(templates))}", hint=hint
    )


def grid_template(n_panels: int) -> Template:
    """A fallback for panel counts no template covers: tiers of 2-3 panels, fuller tiers in the middle."""
    if n_panels < 1:
        raise StoryboardError("a page needs at least one panel")
    rows = 1 if n_panels <= 2 else math.ceil(n_panels / 3) if n_panels > 4 else 2
    base, extra = divmod(n_panels, rows)
    counts = [base] * rows
    middle = sorted(range(rows), key=lambda r: abs(r - (rows - 1) / 2))
    for r in middle[:extra]:
        counts[r] += 1
    tiers = [{"height": 1, "columns": [1] * c} for c in counts]
    return parse_template({"tiers": tiers}, f"auto-{n_panels}")


def choose_template(
    n_panels: int,
    aspects: Sequence[float],
    templates: dict[str, Template] | None = None,
    *,
    live_aspect: float = 190 / 277,
) -> Template:
    """The template with n_panels panels whose shapes best match the images' aspect ratios.

    The cost is the summed |log| ratio between each panel's aspect on the page and its image's, so a
    portrait image is not squeezed into a wide strip when a better arrangement exists. Ties keep the
    alphabetically first name, so the choice is stable.
    """
    if templates is None:
        templates = list_templates()
    if len(aspects) != n_panels:
        raise ValueError("one aspect ratio per panel is needed")
    candidates = [t for t in templates.values() if t.n_panels == n_panels]
    if not candidates:
        return grid_template(n_panels)

    def cost(t: Template) -> tuple[float, str]:
        page = t.aspects(live_aspect)
        return (sum(abs(math.log(p / a)) for p, a in zip(page, aspects, strict=True)), t.name)

    return min(candidates, key=cost)
