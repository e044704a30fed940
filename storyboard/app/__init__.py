"""The application layer: what a user does (validate, build, render panels, candidates, pick, layout),
as functions the CLI and the review page both call. See ``storyboard.app.operations``."""

from storyboard.app.operations import (
    Candidates,
    StorySummary,
    build_story,
    candidates,
    layout,
    make_renderer,
    panel_jobs,
    pick,
    preview_seeds,
    validate,
)

__all__ = [
    "Candidates",
    "StorySummary",
    "build_story",
    "candidates",
    "layout",
    "make_renderer",
    "panel_jobs",
    "pick",
    "preview_seeds",
    "validate",
]
