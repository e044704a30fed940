"""Pinned model files from the Hugging Face hub, shared by every stage that needs downloaded weights
(the check, the face detailer, ControlNet annotators): where they are here, and how they get here.

`resolve` only looks (the HF cache, or a `--models DIR` folder): nothing downloads by itself, and a
missing file is a sentence naming it and the command that fetches it. `fetch` downloads pinned
revisions into the HF cache. Lives in models/ so render/ can use it without importing check/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storyboard.errors import ModelError


@dataclass(frozen=True)
class ModelSpec:
    key: str
    repo: str
    # Full commit hashes, read off the repos' public file trees (each one lists the files below):
    # the files a stage computes with cannot change under a story.
    revision: str
    files: tuple[str, ...]  # paths inside the repo
    local_prefix: str = ""  # where they sit under --models DIR when the repo paths have no folder

    def local_path(self, root: Path, file: str) -> Path:
        return root / self.local_prefix / file


def resolve(
    specs: list[ModelSpec],
    *,
    models_dir: Path | None = None,
    cache_dir: Path | None = None,
    stage: str,
    command: str,
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
        raise ModelError(
            f"Model files for {stage} are missing {where}: {', '.join(missing)}.",
            hint=f"run `{command}` once (needs internet)"
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
