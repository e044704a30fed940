"""The check's model files: where they come from (HF hub, pinned revisions) and where they are here.

`storyboard models fetch check` downloads into the usual Hugging Face cache; `--models DIR` names a
local folder instead (same relative paths as in the repos, CLIP under clip-vit-large-patch14/). A check
never downloads by itself: offline or not, a missing file is an error that names it and the command.
"""

from __future__ import annotations

from pathlib import Path

from storyboard.check import ccip, clip_backend
from storyboard.models import hub
from storyboard.models.hub import ModelSpec, fetch

FETCH_COMMAND = "storyboard models fetch check"
__all__ = ["CCIP", "CLIP", "DETECTOR", "ModelSpec", "fetch", "resolve", "specs_for"]

CCIP = ModelSpec(
    key="ccip",
    repo="deepghs/ccip_onnx",
    revision="3ba23ac72d7d2f381ece6399e2dda0a850d0e089",
    files=tuple(f"{ccip.MODEL}/{f}" for f in ccip.FILES),
)
DETECTOR = ModelSpec(
    key="detector",
    repo="deepghs/anime_person_detection",
    revision="e39c744c22432ad01f91dd254fe2b02c8d878b8c",
    files=("person_detect_v1.1_m/model.onnx",),
)
CLIP = ModelSpec(
    key="clip",
    repo=clip_backend.REPO,
    revision="32bd64288804d66eefd0ccbe215aa642df71cc41",
    files=clip_backend.FILES,
    local_prefix="clip-vit-large-patch14",
)
SPECS = {s.key: s for s in (CCIP, DETECTOR, CLIP)}


def specs_for(backend: str, detector: bool = True) -> list[ModelSpec]:
    """The models a check with this backend needs."""
    chosen = [CCIP if backend == "ccip" else CLIP]
    return [*chosen, DETECTOR] if detector else chosen


def resolve(
    specs: list[ModelSpec],
    *,
    models_dir: Path | None = None,
    cache_dir: Path | None = None,
    stage: str = "the check",
    command: str = FETCH_COMMAND,
) -> dict[str, Path]:
    """`models.hub.resolve` with the check's defaults (CLIP needs `--clip` on the fetch command)."""
    clip = " --clip" if any(s.key == "clip" for s in specs) else ""
    return hub.resolve(specs, models_dir=models_dir, cache_dir=cache_dir, stage=stage, command=command + clip)
