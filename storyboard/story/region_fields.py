"""Story fields of characters sharing a panel: a panel's `regions:` (a split or a list of boxes)
and the story's `render.regional` settings. Kept apart from schema.py, which holds the rest of the
story's fields; story/regions.py holds the pure geometry both use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from storyboard.story.base import Strict
from storyboard.story.regions import check_box, parse_split, region_list_problems


class RegionalSettings(Strict):
    """How panels with regions render (Regional Prompter's latent mode settings)."""

    base_ratio: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of the shared (scene) prompt mixed into each region."
    )
    lora_stop_step: int = Field(
        0, ge=0, le=150, description="Region LoRAs apply for this many steps, then the shared set; 0 = all."
    )
    hires_lora_stop_step: int = Field(0, ge=0, le=150, description="The same for the hires pass.")
    feather: float = Field(
        0.05, ge=0.0, le=0.5, description="Width of the soft region edges, as a fraction of the shorter side."
    )
    negative_loras: Literal["region", "shared"] = Field(
        "region",
        description="LoRAs the negative prompt runs under in each region: 'region' = that region's own "
        "set, as in the character's solo panel (a LoRA acts as strongly as alone); 'shared' = the shared "
        "set only, as WebUI's Regional Prompter does (a region's LoRA then acts several times stronger).",
    )


class Region(Strict):
    """Where one character of the panel is, and what only that part of the picture gets."""

    character: str = Field(description="Id of a character of this panel.")
    box: tuple[float, float, float, float] | None = Field(
        None, description="[x0, y0, x1, y1] as fractions of the panel (y down); none = columns in order."
    )
    prompt: str = Field("", description="Prompt words for this region only (added to the scene).")

    @field_validator("box", mode="before")
    @classmethod
    def _four(cls, v: Any) -> Any:
        # Before the tuple schema, whose own words for [0, 0, 0.5] are "box[3]: field required".
        return check_box(v) if isinstance(v, (list, tuple)) and len(v) != 4 else v

    @field_validator("box")
    @classmethod
    def _inside(cls, v: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        return None if v is None else check_box(v)


def _split_or_regions(v: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    # Only a list goes through the list schema, so an error in one region keeps its own path
    # (regions[1].box) and thus its line in the file; so do the list's checks against the panel's
    # characters (declared before regions, so validated already and in info.data).
    chars: list[str] = info.data.get("characters", [])
    if isinstance(v, str):
        if v.strip().lower() == "none":
            return "none"
        _, ratios = parse_split(v)
        if ratios and len(ratios) != len(chars):
            raise ValueError(
                f"the split has {len(ratios)} parts but the panel has {len(chars)} characters "
                f"({', '.join(chars) or 'none'}); give one ratio per character"
            )
        return v.strip()
    regions = handler(v)
    problems = region_list_problems([(r.character, r.box is not None) for r in regions or []], chars)
    if problems:
        errors = [
            InitErrorDetails(type=PydanticCustomError("value_error", msg), loc=loc, input=v)
            for loc, msg in problems
        ]
        raise ValidationError.from_exception_data("Panel.regions", errors)
    return regions


def _regions_schema(schema: dict[str, Any]) -> None:
    schema.setdefault("anyOf", []).insert(
        0, {"type": "string", "description": "'none', or a split such as 'columns 1,1' or 'rows 2,1'"}
    )


if TYPE_CHECKING:
    RegionsField = str | list[Region] | None
else:
    RegionsField = Annotated[list[Region] | None, WrapValidator(_split_or_regions)]
