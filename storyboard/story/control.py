"""A panel's ControlNet units, as the WebUI ControlNet extension (Mikubill/sd-webui-controlnet) names
their settings, so a WebUI user's unit means the same here.

Pure data: the renderer (``render/control/``) runs the units; the planner resolves each unit's image
beside the story and puts its content digest in the job.
"""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

ControlModeName = Literal["Balanced", "My prompt is more important", "ControlNet is more important"]
ResizeModeName = Literal["Just Resize", "Crop and Resize", "Resize and Fill"]

# Preprocessors built in (no downloaded weights), with the extension's slider defaults for
# threshold_a / threshold_b (None: the module has no such slider; the infotext leaves it out).
BUILTIN_MODULES: dict[str, tuple[float | None, float | None]] = {
    "none": (None, None),
    "invert": (None, None),  # the extension's "invert (from white bg & black line)"
    "canny": (100.0, 200.0),  # low and high threshold
    "threshold": (127.0, None),  # binarize at threshold_a
    "scribble_xdog": (32.0, None),  # XDoG edge threshold
    "tile_resample": (1.0, None),  # down-sampling rate
}
# Preprocessors that need annotator weights. lineart_anime, depth_anything, depth_midas (alias depth)
# and dw_openpose_full run (after `storyboard models fetch control`); the others are accepted names
# refused with a sentence.
WEIGHTED_MODULES = (
    "depth_anything",
    "dw_openpose_full",
    "openpose",
    "openpose_full",
    "openpose_face",
    "openpose_hand",
    "lineart_anime",
    "lineart_realistic",
    "depth_midas",
    "depth_zoe",
    "scribble_hed",
    "softedge_hed",
)
MODULE_ALIASES = {
    "invert (from white bg & black line)": "invert",
    "depth": "depth_midas",
    "lineart": "lineart_realistic",
}


class ControlUnit(BaseModel):
    """One ControlNet unit: a control image, how it is preprocessed, which ControlNet reads it and
    how strongly and when it steers the sampling."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    image: Path = Field(description="The control image (or ready-made map), a path beside the story.")
    module: str = Field(
        "none",
        description="Preprocessor: none (the image is the map, e.g. a pose skeleton), invert, canny, "
        "threshold, scribble_xdog, tile_resample; lineart_anime, depth_anything, depth_midas (alias depth) "
        "and dw_openpose_full need `storyboard models fetch control`.",
    )
    model: str = Field(
        description="ControlNet file: a name in WebUI's models/ControlNet or the extension's models "
        "folder (e.g. control_v11p_sd15_openpose), or a path."
    )
    weight: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="Control weight.")
    guidance_start: float = Field(0.0, ge=0.0, le=1.0, description="Starting control step (fraction).")
    guidance_end: float = Field(1.0, ge=0.0, le=1.0, description="Ending control step (fraction).")
    control_mode: ControlModeName = "Balanced"
    resize_mode: ResizeModeName = "Crop and Resize"
    pixel_perfect: bool = Field(False, description="Preprocess at the panel's own resolution.")
    processor_res: int = Field(512, ge=64, le=2048, description="Preprocessor resolution.")
    threshold_a: float | None = Field(None, description="The module's first slider (canny: low).")
    threshold_b: float | None = Field(None, description="The module's second slider (canny: high).")

    @field_validator("module")
    @classmethod
    def _known_module(cls, v: str) -> str:
        name = MODULE_ALIASES.get(v.strip(), v.strip())
        known = [*BUILTIN_MODULES, *WEIGHTED_MODULES]
        if name not in known:
            close = get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'" if close else ""
            raise ValueError(f"unknown preprocessor '{v}'{hint} (built in: {', '.join(BUILTIN_MODULES)})")
        return name

    @field_validator("model")
    @classmethod
    def _model_named(cls, v: str) -> str:
        if not v.strip() or v.strip().lower() == "none":
            raise ValueError("name the ControlNet file, e.g. control_v11p_sd15_openpose")
        return v.strip()

    @field_validator("guidance_end")
    @classmethod
    def _range(cls, v: float, info: ValidationInfo) -> float:
        start = info.data.get("guidance_start")
        if isinstance(start, float) and start > v:
            raise ValueError(f"guidance_end {v:g} is before guidance_start {start:g}; make end >= start")
        return v

    @property
    def thresholds(self) -> tuple[float | None, float | None]:
        """threshold_a/b as used: the story's values, else the module's defaults."""
        da, db = BUILTIN_MODULES.get(self.module, (None, None))
        a = self.threshold_a if self.threshold_a is not None else da
        b = self.threshold_b if self.threshold_b is not None else db
        return a, b

    def spec(self, digest: str) -> dict[str, Any]:
        """What in the unit changes pixels, with the image by content (its path may move)."""
        return {**self.model_dump(mode="json", exclude={"image"}), "image": digest}
