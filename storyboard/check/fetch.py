"""The check's model files: where they come from (HF hub, pinned revisions) and where they are here.

`storyboard models fetch check` downloads into the usual Hugging Face cache; `--models DIR` names a
local folder instead (same relative paths as in the repos, CLIP under clip-vit-large-patch14/). A check
never downloads by itself: offline or not, a missing file is an error that names it and the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storyboard.check import ccip, clip_backend
from storyboard.errors import ModelError

FETCH_COMMAND = "storyboard models fetch check"


@dataclass(frozen=True)
class ModelSpec:
    key: str
    repo: str
    # Full commit hashes, read off the repos' public file trees (each one lists the files below):
    # the files a check is scored with cannot change under a story.
    revision: str
    files: tuple[str, ...]  # paths inside the repo
    local_prefix: str = ""  # where they sit under --models DIR when the repo paths have no folder

    def local_path(self, root: Path, file: str) -> Path:
        return root / self.local_prefix / file


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
    """Folder of each model's files (the one holding its first file), without touching the network.
    `stage` and `command` name who needs them and what fetches them in the error sentence."""
    from huggingface_hub import try_to_load_from_cache

    found: dict[str, Path] = {}
    missing: list[str] = []
    for spec in specs:
        paths: list[Path] = []
        for file in spec.files:
            if models_dir is not None:
                p = spec.local_path(models_dir, file)
                if p.is_file():
                    paths.append(p)
                else:
                    missing.append(str(p))
                continue
            hit = try_to_load_from_cache(
                spec.repo, file, cache_dir=str(cache_dir) if cache_dir else None, revision=spec.revision
            )
            if isinstance(hit, str):
                paths.append(Path(hit))
            else:
                missing.append(f"{spec.repo}/{file} @ {spec.revision[:10]}")
        if paths and len(paths) == len(spec.files):
            found[spec.key] = paths[0].parent
    if missing:
        where = f"in {models_dir}" if models_dir is not None else "in the Hugging Face cache"
        clip = " --clip" if any(s.key == "clip" for s in specs) else ""
        raise ModelError(
            f"Model files for {stage} are missing {where}: {', '.join(missing)}.",
            hint=f"run `{command}{clip}` once (needs internet)"
            + (", or copy the files to those paths" if models_dir is not None else ""),
        )
    return found


def fetch(specs: list[ModelSpec], *, cache_dir: Path | None = None) -> dict[str, Path]:
    """Download the pinned files into the HF cache (kept if already there); folder per model."""
    import os

    from huggingface_hub import hf_hub_download

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise ModelError("HF_HUB_OFFLINE is set, so nothing can be downloaded.", hint="unset it and retry")
    found: dict[str, Path] = {}
    for spec in specs:
        for file in spec.files:
            try:
                path = hf_hub_download(
                    spec.repo, file, revision=spec.revision, cache_dir=str(cache_dir) if cache_dir else None
                )
            except Exception as exc:  # network, auth and HTTP errors all end the same way for the user
                raise ModelError(f"Could not download {spec.repo}/{file}: {exc}") from exc
            found.setdefault(spec.key, Path(path).parent)
    return found
