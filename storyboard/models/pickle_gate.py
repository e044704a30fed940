"""The one door through which pickle weight files (.ckpt, .pt, .pth, .bin) are read.

Unpickling can run code, so these files are refused unless the user opts in; with the opt-in they are
still read with torch.load(weights_only=True), which rejects anything but tensors and plain containers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from storyboard.errors import ModelError
from storyboard.models.registry import is_pickle

PICKLE_HINT = "pass --allow-pickle on the command line, or set `render.allow_pickle: true` in the story"


def refuse_pickle(path: Path, *, allow_pickle: bool, what: str = "model file") -> None:
    """Raise the pickle refusal for a pickle file unless allow_pickle; other files pass.

    Called where files are found, so a story is refused before anything loads."""
    if is_pickle(path) and not allow_pickle:
        raise _refusal(path, what)


def _refusal(path: Path, what: str) -> ModelError:
    return ModelError(
        f"The {what} {path} is a pickle file ({path.suffix}), which can run arbitrary code when loaded, "
        "so it is refused by default.",
        hint=f"prefer a .safetensors version of it; if you trust the file, {PICKLE_HINT}",
    )


def load_pickle(path: Path, *, allow_pickle: bool, what: str = "model file") -> Any:
    """The object stored in a pickle weights file, on CPU; ModelError unless allow_pickle."""
    if not allow_pickle:
        raise _refusal(path, what)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"Cannot read the {what} {path}: torch.load(weights_only=True) failed ({exc}).",
            hint="the file may be corrupt or hold more than plain tensors; convert it to safetensors",
        ) from None
