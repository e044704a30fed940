"""CLIP ViT-L/14 image features through transformers, as ViStoryBench scores non-realistic characters.

Distance is 1 - cosine similarity of the projected image embeddings. CLIP has no published
same-character threshold; DEFAULT_THRESHOLD is a starting point to be calibrated per story
(`check_threshold`), not a measured figure.
"""

from __future__ import annotations

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
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        # Only the vision tower and its projection are built; the text tower's weights are skipped.
        model: Any = CLIPVisionModelWithProjection.from_pretrained(folder)
        model = model.to(dev).eval()
        processor = CLIPImageProcessor.from_pretrained(folder)
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
