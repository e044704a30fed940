"""Pictures a story hands the renderer (init images, masks): read once, known by content.

(Stand-in with the interface the ControlNet work owns; replaced by theirs at the merge.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from storyboard.errors import StoryboardError


def load_input_image(path: str | Path, *, mode: str = "RGB") -> Image.Image:
    """The picture at `path`, fully read, converted to `mode` (a sentence when it cannot be read)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im if im.mode == mode else im.convert(mode)
    except (OSError, ValueError) as exc:
        raise StoryboardError(f"Cannot read the image {path}: {exc}.") from None


def image_digest(path: str | Path) -> str:
    """sha256 of the file's bytes: what enters a job hash for it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
