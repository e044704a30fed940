"""Shared by the check tests: panels drawn with PIL (a figure per detector strip) and a CheckInput."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from storyboard.check.types import CharacterSpec, CheckInput, PanelSpec

SIZE = 256
RED, BLUE, GREEN = (215, 40, 40), (40, 60, 210), (40, 170, 60)


def draw_panel(path: Path, figures: list[tuple[int, tuple[int, int, int]]], size: int = SIZE) -> Path:
    """White panel, a coloured figure (head + body) in each given strip (0..3) of the stand-in detector."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    w = size // 4
    for strip, color in figures:
        x0 = strip * w
        d.ellipse([x0 + w // 4, size // 10, x0 + 3 * w // 4, size // 10 + w // 2], fill=color)
        d.rectangle([x0 + w // 8, size // 10 + w // 2, x0 + 7 * w // 8, size - 4], fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


STORY = [  # panel id, characters, figures
    ("p1.1", ("aki",), [(1, RED)]),
    ("p1.2", ("ben",), [(2, BLUE)]),
    ("p1.3", ("aki", "ben"), [(0, BLUE), (3, RED)]),
    ("p2.1", ("aki",), [(2, GREEN)]),  # the planted off-model panel
    ("p2.2", ("aki",), [(0, RED)]),
    ("p2.3", ("ben",), [(1, BLUE)]),
]


def make_input(root: Path, references: dict[str, list[Path]] | None = None) -> CheckInput:
    panels = []
    for pid, chars, figs in STORY:
        img = draw_panel(root / "panels" / f"{pid}.png", figs)
        panels.append(PanelSpec(panel_id=pid, image=img, characters=chars, seed=100 + len(panels)))
    refs = references or {}
    return CheckInput(
        title="Test Story",
        characters={
            "aki": CharacterSpec(id="aki", name="Aki", references=tuple(refs.get("aki", []))),
            "ben": CharacterSpec(id="ben", name="Ben", references=tuple(refs.get("ben", []))),
        },
        panels=tuple(panels),
        out_dir=root / "check",
    )
