"""Find model files the way a WebUI user names them: by path, by file stem, or by LoRA alias.

Folders follow a WebUI install (``models/Stable-diffusion``, ``models/Lora``, ...), searched
recursively. Only safetensors files are safe to load; pickle formats are listed (so a user who names
one gets a clear refusal from the loader rather than "not found") but flagged.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from storyboard.errors import ModelError

SAFE_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".bin", ".pth")
MODEL_EXTENSIONS = SAFE_EXTENSIONS + PICKLE_EXTENSIONS

Kind = Literal["checkpoint", "lora", "vae", "embedding", "upscaler", "controlnet"]

# A safetensors header is JSON; anything near this size is a corrupt length field, not a header.
_MAX_HEADER = 100 * 1024 * 1024


def is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_EXTENSIONS


def safetensors_header(path: str | Path) -> dict[str, object]:
    """The JSON header of a .safetensors file (tensor index + ``__metadata__``), reading no tensors."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ModelError(f"{p} is not a safetensors file: it is too short to have a header.")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > _MAX_HEADER:
                raise ModelError(f"{p} is not a valid safetensors file: its header length {n} is impossible.")
            raw = fh.read(n)
    except OSError as exc:
        raise ModelError(f"Cannot read {p}: {exc.strerror or exc}.") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{p} is not a valid safetensors file: its header is not JSON.") from exc
    if not isinstance(header, dict):
        raise ModelError(f"{p} is not a valid safetensors file: its header is not a JSON object.")
    return header


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` string map of a .safetensors file ({} when it has none)."""
    meta = safetensors_header(path).get("__metadata__") or {}
    if not isinstance(meta, dict):
        return {}
    return {str(k): str(v) for k, v in meta.items()}


def _is_diffusers_folder(path: Path, kind: Kind) -> bool:
    if kind == "checkpoint":
        return (path / "model_index.json").is_file()
    if kind in ("vae", "controlnet"):
        return (path / "config.json").is_file()
    return False


def _inside_diffusers_folder(path: Path, root: Path) -> bool:
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            return False
        if (parent / "model_index.json").is_file() or (parent / "config.json").is_file():
            return True
    return False


@dataclass(frozen=True)
class ModelFolders:
    """Folders searched for each kind of model file, first folder first."""

    checkpoints: list[Path] = field(default_factory=list)
    loras: list[Path] = field(default_factory=list)
    vaes: list[Path] = field(default_factory=list)
    embeddings: list[Path] = field(default_factory=list)
    upscalers: list[Path] = field(default_factory=list)
    controlnets: list[Path] = field(default_factory=list)

    @classmethod
    def from_webui_root(cls, root: str | Path) -> ModelFolders:
        """The folders of a Stable Diffusion WebUI install at ``root``."""
        r = Path(root).expanduser()
        return cls(
            checkpoints=[r / "models" / "Stable-diffusion"],
            loras=[r / "models" / "Lora", r / "models" / "LyCORIS"],
            vaes=[r / "models" / "VAE"],
            embeddings=[r / "embeddings"],
            upscalers=[r / "models" / "ESRGAN"],
            # The ControlNet extension lists both (its own folder first).
            controlnets=[r / "extensions" / "sd-webui-controlnet" / "models", r / "models" / "ControlNet"],
        )

    def for_kind(self, kind: Kind) -> list[Path]:
        return {
            "checkpoint": self.checkpoints,
            "lora": self.loras,
            "vae": self.vaes,
            "embedding": self.embeddings,
            "upscaler": self.upscalers,
            "controlnet": self.controlnets,
        }[kind]

    def merged(self, other: ModelFolders) -> ModelFolders:
        """These folders followed by ``other``'s (e.g. story folders, then a WebUI root)."""
        return ModelFolders(
            checkpoints=[*self.checkpoints, *other.checkpoints],
            loras=[*self.loras, *other.loras],
            vaes=[*self.vaes, *other.vaes],
            embeddings=[*self.embeddings, *other.embeddings],
            upscalers=[*self.upscalers, *other.upscalers],
            controlnets=[*self.controlnets, *other.controlnets],
        )


@dataclass(frozen=True)
class ModelFile:
    """One model file found on disk."""

    path: Path
    kind: Kind
    name: str  # file stem, the name WebUI shows and prompts use
    alias: str | None = None  # LoRA ``ss_output_name``, when it differs from the stem

    @property
    def pickle(self) -> bool:
        return is_pickle(self.path)


class Registry:
    """Resolves references to checkpoints, LoRAs, VAEs and embeddings in a set of folders."""

    def __init__(self, folders: ModelFolders, *, base_dir: str | Path | None = None) -> None:
        self.folders = folders
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self._scans: dict[Kind, list[ModelFile]] = {}

    # Listing ---------------------------------------------------------------------------------

    def files(self, kind: Kind) -> list[ModelFile]:
        """Every model file of ``kind``, sorted by folder order then path; scanned once."""
        if kind not in self._scans:
            self._scans[kind] = self._scan(kind)
        return list(self._scans[kind])

    def list_checkpoints(self) -> list[ModelFile]:
        return self.files("checkpoint")

    def list_loras(self) -> list[ModelFile]:
        return self.files("lora")

    def list_vaes(self) -> list[ModelFile]:
        return self.files("vae")

    def list_embeddings(self) -> list[ModelFile]:
        return self.files("embedding")

    def refresh(self) -> None:
        """Forget scans so files added since are seen."""
        self._scans.clear()

    def _scan(self, kind: Kind) -> list[ModelFile]:
        found: list[ModelFile] = []
        seen: set[Path] = set()
        for folder in self.folders.for_kind(kind):
            if not folder.is_dir():
                continue
            for p in sorted(folder.rglob("*")):
                if _inside_diffusers_folder(p, folder):
                    continue  # weights of a diffusers model are listed as the folder itself
                if p.is_dir():
                    if not _is_diffusers_folder(p, kind):
                        continue
                elif p.suffix.lower() not in MODEL_EXTENSIONS:
                    continue
                real = p.resolve()
                if real in seen:
                    continue
                seen.add(real)
                name = p.name if p.is_dir() else p.stem
                found.append(ModelFile(path=p, kind=kind, name=name, alias=self._alias(p, kind)))
        return found

    @staticmethod
    def _alias(path: Path, kind: Kind) -> str | None:
        if kind != "lora" or path.suffix.lower() != ".safetensors":
            return None
        try:
            alias = safetensors_metadata(path).get("ss_output_name")
        except ModelError:
            # A broken LoRA must not hide the others; loading it later names the problem.
            return None
        return alias if alias and alias != path.stem else None

    # Lookup ----------------------------------------------------------------------------------

    def find(self, kind: Kind, ref: str | Path) -> ModelFile:
        """The file a reference names: an existing path (absolute or relative to base_dir) or a name.

        Names match the file stem (case-sensitive first, then case-insensitive), and for LoRAs also
        the ``ss_output_name`` alias. Raises ModelError when nothing or more than one file matches.
        """
        text = str(ref).strip()
        if not text:
            raise ModelError(f"An empty {kind} name was given; name a file or its stem.")
        as_path = self._as_path(text, kind)
        if as_path is not None:
            alias = self._alias(as_path, kind)
            return ModelFile(path=as_path, kind=kind, name=as_path.stem, alias=alias)
        files = self.files(kind)
        # A name written with its extension ("foo.safetensors") means the stem.
        stem = text
        for ext in MODEL_EXTENSIONS:
            if text.lower().endswith(ext):
                stem = text[: -len(ext)]
                break
        matches = [f for f in files if stem in (f.name, f.alias) or f.path.name == text]
        if not matches:
            low = stem.lower()
            matches = [f for f in files if low in (f.name.lower(), (f.alias or "").lower())]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            # The same name in two places is ambiguous; a safetensors + pickle pair prefers safetensors.
            safe = [f for f in matches if not f.pickle]
            if len(safe) == 1 and len({f.name for f in matches}) == 1:
                return safe[0]
            listing = "\n".join(f"  - {f.path}" for f in matches)
            raise ModelError(
                f"The {kind} name '{text}' matches {len(matches)} files:\n{listing}",
                hint="rename one of them, or give the path to the one you mean",
            )
        raise self._missing(kind, text, files)

    def _as_path(self, text: str, kind: Kind) -> Path | None:
        p = Path(text).expanduser()
        if p.is_absolute():
            candidates = [p]
        else:
            # WebUI titles checkpoints by their path inside the models folder ("anime/x.safetensors").
            candidates = [folder / p for folder in self.folders.for_kind(kind)]
            # A bare name ("AnythingV5") means a model in the folders, even when the story's own folder
            # happens to hold something of that name; only something path-like is read from there.
            if len(p.parts) > 1 or p.suffix.lower() in MODEL_EXTENSIONS:
                candidates.insert(0, self.base_dir / p)
        for c in candidates:
            if c.is_file() or (c.is_dir() and _is_diffusers_folder(c, kind)):
                return c
        if p.is_absolute() or len(p.parts) > 1:
            looked = ", ".join(str(c) for c in candidates)
            raise ModelError(f"The {kind} file {text} does not exist (looked for {looked}).")
        return None

    def _missing(self, kind: Kind, text: str, files: list[ModelFile]) -> ModelError:
        names = sorted({n for f in files for n in (f.name, f.alias) if n})
        close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
        if not close:
            lowered = {n.lower(): n for n in names}
            close = [
                lowered[c] for c in difflib.get_close_matches(text.lower(), list(lowered), n=5, cutoff=0.5)
            ]
        folders = self.folders.for_kind(kind)
        where = ", ".join(str(f) for f in folders) if folders else "(no folders configured)"
        msg = f"No {kind} named '{text}' was found in {where}."
        if close:
            msg += " Closest names: " + ", ".join(close) + "."
        elif names:
            msg += f" {len(names)} {kind} file(s) are there."
        return ModelError(msg, hint=f"check the spelling, or put the {kind} file in one of those folders")

    def find_checkpoint(self, ref: str | Path) -> ModelFile:
        return self.find("checkpoint", ref)

    def find_lora(self, ref: str | Path) -> ModelFile:
        return self.find("lora", ref)

    def find_vae(self, ref: str | Path) -> ModelFile:
        return self.find("vae", ref)

    def find_embedding(self, ref: str | Path) -> ModelFile:
        return self.find("embedding", ref)

    def find_upscaler(self, ref: str | Path) -> ModelFile:
        return self.find("upscaler", ref)

    def find_controlnet(self, ref: str | Path) -> ModelFile:
        return self.find("controlnet", ref)
