"""The SD1.x CLIP tokenizer, shipped with the package so nothing is fetched from a model hub.

The files in ``storyboard/data/clip_tokenizer/`` were generated once by
``tools/make_clip_tokenizer.py`` from OpenAI CLIP's BPE list. SDXL's second text encoder
(OpenCLIP ViT-bigG) uses the same vocabulary with ``!`` as its pad token.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from transformers import CLIPTokenizer

from storyboard.errors import ModelError

BOS_ID = 49406
EOS_ID = 49407


def tokenizer_dir() -> Path:
    """Folder holding the shipped tokenizer files (usable as a diffusers ``tokenizer`` folder)."""
    return Path(str(resources.files("storyboard") / "data" / "clip_tokenizer"))


@lru_cache(maxsize=4)
def load_clip_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """The CLIP tokenizer; ``pad_token="!"`` gives SDXL's second tokenizer. Cached per pad token.

    Callers share the returned object: do not mutate it.
    """
    folder = tokenizer_dir()
    if not (folder / "vocab.json").is_file():
        raise ModelError(
            f"The bundled CLIP tokenizer is missing from {folder}.",
            hint="reinstall storyboard, or run tools/make_clip_tokenizer.py to regenerate it",
        )
    return CLIPTokenizer.from_pretrained(str(folder), pad_token=pad_token, local_files_only=True)
