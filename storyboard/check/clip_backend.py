"""CLIP ViT-L/14 image features through transformers, as ViStoryBench scores non-realistic characters.

Distance is 1 - cosine similarity of the projected image embeddings. CLIP has no published
same-character threshold; DEFAULT_THRESHOLD is a starting point to be calibrated per story
(`check: {threshold}` in the story or on a character, or `check --threshold`; the README says how),
not a measured figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from storyboard.check.backend import Features, cosine_distances, l2_normalize, normalized_mean
from storyboard.check.images import load_rgb
from storyboard.errors import ModelError

REPO = "openai/clip-vit-large-patch14"
FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
DEFAULT_THRESHOLD = 0.25  # cosine similarity 0.75; uncalibrated, see the module docstring


def check_files(folder: Path) -> None:
    """Each file of a CLIP folder readable as what it is, so a truncated one is named (transformers'
    own errors say what failed to parse, not which file)."""
    from safetensors import SafetensorError, safe_open

    for name in ("config.json", "preprocessor_config.json"):
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path}: missing; a transformers CLIP folder has {', '.join(FILES)}.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: not valid JSON ({exc}); the file may be truncated.") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path}: should hold a JSON object of settings, not {type(data).__name__}.")
    weights = folder / "model.safetensors"
    if weights.is_file():
        try:
            with safe_open(str(weights), framework="numpy") as f:
                f.keys()
        except (SafetensorError, ValueError) as exc:
            raise ModelError(
                f"{weights}: not a readable safetensors file ({exc}); it may be truncated."
            ) from None


@dataclass
class ClipBackend:
    model: Any
    processor: Any
    device: str
    model_id: str
    default_threshold: float = DEFAULT_THRESHOLD
    name: str = "clip"
    batch: int = 16

    @classmethod
    def open(cls, folder: Path, *, device: str = "auto") -> ClipBackend:
        """A transformers CLIP folder (config.json, preprocessor_config.json, weights)."""
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder}: no config.json; not a transformers CLIP folder.")
        check_files(folder)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            # Only the vision tower and its projection are built; the text tower's weights are skipped.
            model: Any = CLIPVisionModelWithProjection.from_pretrained(folder)
            processor = CLIPImageProcessor.from_pretrained(folder)
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            # The files parse, but do not make a CLIP vision model (wrong keys, shapes, model type).
            reason = " ".join(str(exc).split())[:300]
            raise ModelError(f"{folder}: not a usable CLIP model folder ({reason}).") from None
        model = model.to(dev).eval()
        return cls(model, processor, dev, model_id=f"{folder.name}:{model.config.projection_dim}")

    def embed(self, images: list[Image.Image]) -> Features:
        import torch

        rows = []
        for i in range(0, len(images), self.batch):
            chunk = [load_rgb(im) for im in images[i : i + self.batch]]
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                emb = self.model(pixel_values=pixels).image_embeds
            rows.append(emb.float().cpu().numpy())
        dim = int(self.model.config.projection_dim)
        return l2_normalize(np.concatenate(rows)) if rows else np.zeros((0, dim), np.float32)

    def distances(self, a: Features, b: Features) -> NDArray[np.float32]:
        return cosine_distances(a, b)

    def prototype(self, feats: Features) -> Features:
        return normalized_mean(feats)
