"""Textual-inversion embeddings in WebUI's formats (``modules/textual_inversion/textual_inversion.py``).

An embedding is named after its file's stem and is matched in prompts by that name's token ids.
Accepted layouts, as in WebUI's ``create_embedding_from_data``:

- ``{'string_to_param': {'*': T}}`` (WebUI-trained ``.pt``; also seen in ``.safetensors`` form),
- ``{'clip_l': T, 'clip_g': T}`` (SDXL),
- a single-tensor dict such as ``{'emb_params': T}`` (diffusers concepts, most Civitai files).

``.safetensors`` load by default; ``.pt``/``.bin`` only with ``allow_pickle=True``, and then through
``torch.load(weights_only=True)``. PNG-embedded embeddings are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from storyboard.errors import ModelError
from storyboard.models.hashes import sha256_file
from storyboard.models.pickle_gate import load_pickle

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".bin")


@dataclass(frozen=True, eq=False)
class Embedding:
    """A textual-inversion embedding: ``vectors`` (n, C) for CLIP-L, ``vectors_g`` (n, 1280) for SDXL's G."""

    name: str
    vectors: torch.Tensor
    vectors_g: torch.Tensor | None
    sha256: str

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def shorthash(self) -> str:
        """What WebUI writes in ``TI hashes``: the file's sha256, first 12 hex digits."""
        return self.sha256[:12]


def load_embedding(path: str | Path, *, allow_pickle: bool = False) -> Embedding:
    """Read one embedding file; raises ModelError naming the file when it cannot be used."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ModelError(f"Embedding file {path} does not exist.")
    if suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise ModelError(f"Embedding file {path} is not a readable safetensors file: {exc}") from None
    elif suffix in PICKLE_SUFFIXES:
        data = load_pickle(path, allow_pickle=allow_pickle, what="embedding file")
    else:
        raise ModelError(
            f"Embedding file {path} has an unsupported type {suffix!r}.",
            hint="use .safetensors (or .pt/.bin with allow_pickle)",
        )
    vectors, vectors_g = _vectors_from_data(data, path)
    return Embedding(name=path.stem, vectors=vectors, vectors_g=vectors_g, sha256=sha256_file(path))


def load_embeddings_dir(folder: str | Path, *, allow_pickle: bool = False) -> dict[str, Embedding]:
    """All embeddings under ``folder`` (recursively), keyed by name; pickles only with allow_pickle."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"Embeddings folder {folder} does not exist.")
    suffixes = SAFE_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())
    found: dict[str, Embedding] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes:
            emb = load_embedding(path, allow_pickle=allow_pickle)
            if emb.name in found:
                raise ModelError(
                    f"Two embeddings are named {emb.name!r} under {folder}.",
                    hint="rename one file: prompts refer to embeddings by file name",
                )
            found[emb.name] = emb
    return found


def _vectors_from_data(data: Any, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(data, Mapping):
        raise ModelError(f"Embedding file {path} does not hold a dictionary of tensors.")
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if not isinstance(params, Mapping) or len(params) != 1:
            raise ModelError(f"Embedding file {path} holds more than one term in string_to_param.")
        return _as_matrix(next(iter(params.values())), path), None
    if "clip_l" in data and "clip_g" in data:
        return _as_matrix(data["clip_l"], path), _as_matrix(data["clip_g"], path)
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(data) == 1 and len(tensors) == 1:
        return _as_matrix(tensors[0], path), None
    raise ModelError(
        f"Embedding file {path} is neither a textual-inversion embedding nor a diffusers concept "
        f"(keys: {', '.join(map(str, list(data)[:6]))})."
    )


def _as_matrix(t: Any, path: Path) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim not in (1, 2):
        raise ModelError(f"Embedding file {path} has a vector block that is not a 1-D or 2-D tensor.")
    t = t.detach().to(dtype=torch.float32)
    return t.unsqueeze(0) if t.ndim == 1 else t
