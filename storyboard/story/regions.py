"""Where characters stand in a panel: Regional-Prompter-style splits ("columns 1,1", "rows 2,1") and
boxes, as panel fractions with the origin at the top-left, x to the right and y down (the same
convention as ``speaker_at``). A box is ``(x0, y0, x1, y1)``.

Pure functions over numbers, so the story loader checks a split while it validates and the planner
places characters without the render stack; render/regions.py turns boxes into masks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

from storyboard.prompt.extra_networks import format_number

Box = tuple[float, float, float, float]
SplitKind = Literal["columns", "rows"]

_SPLIT = re.compile(r"^\s*(columns|rows)\s*(.*?)\s*$", re.IGNORECASE)


def parse_split(text: str) -> tuple[SplitKind, tuple[float, ...]]:
    """``"columns 1,1"`` / ``"rows 2,1"`` -> (kind, ratios); ratios default to equal parts later.

    >>> parse_split("columns 1,2")
    ('columns', (1.0, 2.0))
    >>> parse_split("Rows")
    ('rows', ())
    >>> parse_split("diagonal 1,1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a split is 'columns' or 'rows' with optional ratios, ... (got 'diagonal 1,1')
    """
    m = _SPLIT.match(text)
    if m is None:
        raise ValueError(
            "a split is 'columns' or 'rows' with optional ratios, e.g. 'columns 1,1' or 'rows 2,1' "
            f"(got {text!r})"
        )
    kind: SplitKind = "columns" if m.group(1).lower() == "columns" else "rows"
    rest = m.group(2)
    if not rest:
        return kind, ()
    try:
        ratios = tuple(float(part) for part in rest.split(","))
    except ValueError:
        msg = f"split ratios must be numbers separated by commas, e.g. '2,1' (got {rest!r})"
        raise ValueError(msg) from None
    if any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ValueError(f"split ratios must be positive numbers (got {rest!r})")
    return kind, ratios


def split_boxes(kind: SplitKind, ratios: Sequence[float], count: int, *, rtl: bool = False) -> list[Box]:
    """The boxes of a split, one per character in the order given.

    Columns follow the reading direction: left to right, or right to left for ``rtl`` (the first
    character listed is the first one a reader meets). Rows always go top to bottom. Empty
    ``ratios`` means equal parts.

    >>> split_boxes("columns", (), 2)
    [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
    >>> split_boxes("columns", (1, 3), 2, rtl=True)
    [(0.75, 0.0, 1.0, 1.0), (0.0, 0.0, 0.75, 1.0)]
    >>> split_boxes("rows", (2, 1, 1), 3)
    [(0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 0.75), (0.0, 0.75, 1.0, 1.0)]
    """
    parts = list(ratios) if ratios else [1.0] * count
    if len(parts) != count:
        raise ValueError(f"the split has {len(parts)} parts for {count} characters; give one ratio each")
    total = float(sum(parts))
    edges = [0.0]
    for p in parts:
        edges.append(edges[-1] + p / total)
    edges[-1] = 1.0  # no rounding gap at the far edge
    spans = list(zip(edges[:-1], edges[1:], strict=True))
    if kind == "rows":
        return [(0.0, a, 1.0, b) for a, b in spans]
    if rtl:
        return [(1.0 - b, 0.0, 1.0 - a, 1.0) for a, b in spans]
    return [(a, 0.0, b, 1.0) for a, b in spans]


def check_box(box: Sequence[float]) -> Box:
    """A box inside the panel with positive size, else ValueError saying what is wrong.

    >>> check_box([0, 0, 0.5, 1])
    (0.0, 0.0, 0.5, 1.0)
    >>> check_box([0, 0, 0.5])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a box is [x0, y0, x1, y1] as fractions of the panel ...; this one has 3 numbers
    >>> check_box([0.5, 0, 1.2, 1])
    Traceback (most recent call last):
    ...
    ValueError: box [0.5, 0.0, 1.2, 1.0] reaches outside the panel: every value must be between 0 and 1
    """
    if len(box) != 4:
        raise ValueError(
            "a box is [x0, y0, x1, y1] as fractions of the panel (left, top, right, bottom), "
            f"e.g. [0, 0, 0.5, 1]; this one has {len(box)} number{'' if len(box) == 1 else 's'}"
        )
    x0, y0, x1, y1 = (float(v) for v in box)
    shown = f"[{x0}, {y0}, {x1}, {y1}]"
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise ValueError(f"box {shown} reaches outside the panel: every value must be between 0 and 1")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {shown} is empty: x1 must be right of x0 and y1 below y0")
    return x0, y0, x1, y1


def region_list_problems(
    regions: Sequence[tuple[str, bool]], characters: Sequence[str]
) -> list[tuple[tuple[int | str, ...], str]]:
    """What is wrong with a panel's list of regions, given as (character, has a box) pairs: each
    problem with where it is, relative to the list ((k, "character"): region k's character; (k,):
    region k; (): the list), so the story loader points at the line of the region at fault.

    >>> for where, msg in region_list_problems([("iku", True), ("mio", False)], ["iku", "haru"]):
    ...     print(where, msg.split(':')[0])
    (1, 'character') 'mio' is not a character of this panel (characters
    (1,) this region has no box but regions[0] has one
    >>> region_list_problems([("iku", False)], ["iku", "haru"])
    [((), 'no region for haru: every character of the panel needs one')]
    """
    out: list[tuple[tuple[int | str, ...], str]] = []
    seen: set[str] = set()
    listed = ", ".join(characters) or "none"
    for k, (character, _) in enumerate(regions):
        if character not in characters:
            msg = f"'{character}' is not a character of this panel (characters: {listed}); add it to "
            out.append(((k, "character"), msg + "characters or fix the id"))
        elif character in seen:
            earlier = next(j for j, (c, _) in enumerate(regions) if c == character)
            out.append(
                (
                    (k, "character"),
                    f"'{character}' has two regions (regions[{earlier}] and [{k}]); give it one",
                )
            )
        seen.add(character)
    boxed = [k for k, (_, has_box) in enumerate(regions) if has_box]
    if boxed and len(boxed) < len(regions):
        k = next(k for k, (_, has_box) in enumerate(regions) if not has_box)
        out.append(
            (
                (k,),
                f"this region has no box but regions[{boxed[0]}] has one: give every region a box, "
                "or none (then they are columns in the order listed)",
            )
        )
    missing = [c for c in characters if c not in seen]
    if missing and not any(where[1:] == ("character",) for where, _ in out):  # a typo says it already
        out.append(((), f"no region for {', '.join(missing)}: every character of the panel needs one"))
    return out


def format_box(box: Box) -> str:
    """A box as infotext shows it: ``[x0 y0 x1 y1]`` with up to 4 decimals.

    >>> format_box((0.0, 0.0, 0.5, 1.0))
    '[0 0 0.5 1]'
    """
    return "[" + " ".join(format_number(v) for v in box) + "]"


def split_ratios(boxes: Sequence[Box]) -> tuple[SplitKind, list[float]] | None:
    """The Regional Prompter split these boxes form (full-height columns left to right, or
    full-width rows top to bottom, tiling the panel), or None when they are free boxes.

    >>> split_ratios([(0.5, 0, 1, 1), (0, 0, 0.5, 1)])
    ('columns', [0.5, 0.5])
    >>> split_ratios([(0, 0, 0.4, 0.5)]) is None
    True
    """
    for kind, lo, hi, full in (("columns", 0, 2, (1, 3)), ("rows", 1, 3, (0, 2))):
        if not all(b[full[0]] == 0.0 and b[full[1]] == 1.0 for b in boxes):
            continue
        spans = sorted((b[lo], b[hi]) for b in boxes)
        if spans[0][0] != 0.0 or spans[-1][1] != 1.0:
            continue
        if all(abs(a[1] - b[0]) < 1e-9 for a, b in zip(spans, spans[1:], strict=False)):
            return ("columns" if kind == "columns" else "rows"), [round(b - a, 4) for a, b in spans]
    return None


def parse_regions(text: str) -> list[tuple[str, Box]]:
    """Inverse of the ``Regions`` infotext value.

    >>> parse_regions("iku [0 0 0.5 1]; haru [0.5 0 1 1]")
    [('iku', (0.0, 0.0, 0.5, 1.0)), ('haru', (0.5, 0.0, 1.0, 1.0))]
    """
    out: list[tuple[str, Box]] = []
    for item in text.split(";"):
        name, _, rest = item.strip().partition(" [")
        x0, y0, x1, y1 = (float(v) for v in rest.rstrip("]").split())
        out.append((name, (x0, y0, x1, y1)))
    return out
