"""Typed inputs and outputs of the check stage.

The input is built by `storyboard/app/check.py` from a story and its output folder; the stage itself
never reads story files. The report is a pydantic model so that `report.json` is written and read
back by the same definition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in panel pixels
# x0, y0, x1, y1 as fractions of the panel, y down: a regional panel's box for one character, as the
# planner gives it (plain floats, so the stage needs nothing from the story package).
FracBox = tuple[float, float, float, float]
# Where a character's threshold came from, strongest first (check.score.threshold_for).
ThresholdSource = Literal["--threshold", "character", "story", "backend default"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CharacterSpec(_Frozen):
    id: str
    name: str
    references: tuple[Path, ...] = ()
    threshold: float | None = Field(None, description="Distance above which a crop is off-model.")


class PanelSpec(_Frozen):
    panel_id: str
    image: Path
    characters: tuple[str, ...]
    seed: int | None = None
    # Character -> its region, for panels rendered with regional prompting; empty for the others.
    regions: dict[str, FracBox] = Field(default_factory=dict)


class CheckInput(_Frozen):
    title: str
    characters: dict[str, CharacterSpec]
    panels: tuple[PanelSpec, ...]  # story order
    out_dir: Path  # the check folder: index.html, report.json, crops/, cache/
    threshold: float | None = Field(None, description="The story's threshold (story file, check.threshold).")
    threshold_override: float | None = Field(
        None, description="`check --threshold`: every character's threshold, over the story file's."
    )


class Detection(_Frozen):
    box: Box
    score: float
    label: str = "person"


class Appearance(BaseModel):
    """One character in one panel: where it was found and how far it is from its anchor."""

    panel_id: str
    character: str
    box: Box | None = None  # None: the character was not found (missing)
    whole_panel: bool = False  # no detector: the whole panel stands in for the crop
    detection_score: float | None = None
    crop: str | None = None  # file under the check folder
    distance: float | None = None  # to the character's anchor (reference or prototype)
    off_model: bool = False
    region: FracBox | None = None  # the character's region in a regional panel
    in_region: bool | None = None  # box centre inside `region`; None: no region, or not found


class PanelResult(BaseModel):
    panel_id: str
    image: str
    sha256: str
    seed: int | None
    expected: list[str]
    detections: list[Detection]
    occm: float  # ViStoryBench's on-stage character count matching, 0..100
    missing: list[str]
    extra: int  # detections left over after assignment


class CharacterScore(BaseModel):
    id: str
    name: str
    anchor: Literal["reference", "prototype", "none"]
    threshold: float
    # Which setting gave `threshold`: a report read later says why a character was judged as it was.
    # Reports written before the story could set thresholds all used the backend's.
    threshold_source: ThresholdSource = "backend default"
    panels: list[str]
    self_similarity: float | None  # mean pairwise similarity among its crops (1 - distance)
    cross_similarity: float | None  # mean similarity to its anchor
    main_cluster: list[str]  # panel ids the prototype was built from
    flagged: list[str]


class CheckReport(BaseModel):
    title: str
    backend: str
    backend_model: str
    default_threshold: float
    detector: str | None  # None: whole panels were used
    characters: list[CharacterScore]
    panels: list[PanelResult]
    appearances: list[Appearance]
    notes: list[str] = Field(default_factory=list)
    embedded_panels: list[str] = Field(default_factory=list, description="Panels embedded in this run.")

    @property
    def flagged_panels(self) -> list[str]:
        """Panels with at least one off-model character, in story order."""
        bad = {a.panel_id for a in self.appearances if a.off_model}
        return [p.panel_id for p in self.panels if p.panel_id in bad]

    def appearance(self, panel_id: str, character: str) -> Appearance | None:
        for a in self.appearances:
            if a.panel_id == panel_id and a.character == character:
                return a
        return None
