"""Images a story names as input to a render: ControlNet maps, img2img init images, inpaint masks.

One module serves both ends, so a story is checked by the same rules the renderer loads by:

- the story side (``story/inputs.py``, at planning time, before anything loads) finds each file
  beside the story, turns every problem into a sentence at the field's file:line, and puts the
  image's content digest into the panel's job (so changing a pose re-renders that panel only);
- the render side reads the image with :func:`load_input_image`.

It needs only PIL (no torch), so ``validate`` and the planner stay light. The digest is of the
decoded pixels (mode, size, bytes), not of the file: re-saving a PNG with other compression or
metadata keeps every panel's hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from storyboard.errors import StoryboardError

# Modes a control map, init image or mask may come in: what converts to RGB/L without guessing a
# scale. 16-bit and float images (I;16, I, F: e.g. raw depth exports) and CMYK need converting first.
ACCEPTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
MIN_SIDE = 8
MAX_SIDE = 8192

_digests: dict[tuple[str, int, int], str] = {}


def resolve_input_path(text: str | Path, base_dir: Path) -> Path:
    """A path written in a story: absolute as given, else relative to the story file's folder."""
    p = Path(text).expanduser()
    return p if p.is_absolute() else base_dir / p


def input_image_problem(
    path: Path,
    *,
    what: str = "image",
    modes: tuple[str, ...] = ACCEPTED_MODES,
    size: tuple[int, int] | None = None,
) -> str | None:
    """Why `path` cannot be used as an input image (a sentence), or None when it can.

    `size` (width, height), when given, is the size the image must have (a mask for its init image)."""
    if not path.exists():
        return f"{what} {path} does not exist."
    if not path.is_file():
        return f"{what} {path} is not a file."
    try:
        with Image.open(path) as im:
            im.verify()  # reads the whole stream: a truncated file fails here, not mid-render
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"{what} {path} is not a readable image ({type(exc).__name__}: {exc})."
    if mode not in modes:
        return (
            f"{what} {path} has mode {mode}; use an image in one of {', '.join(modes)} "
            f"(convert it to 8-bit RGB or grayscale PNG)."
        )
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        return f"{what} {path} is {w}x{h}; each side must be {MIN_SIDE} to {MAX_SIDE} pixels."
    if size is not None and (w, h) != tuple(size):
        return f"{what} {path} is {w}x{h}, but it must be {size[0]}x{size[1]}."
    return None


def load_input_image(path: str | Path, *, mode: str = "RGB") -> Image.Image:
    """The image at `path` in `mode`. Transparency is composited on white, as the ControlNet
    extension's HWC3 does for a 4-channel image. A bad file raises StoryboardError (the story side
    reports the same problem earlier, at the field's line)."""
    p = Path(path)
    problem = input_image_problem(p)
    if problem is not None:
        raise StoryboardError(problem[0].upper() + problem[1:])
    with Image.open(p) as f:
        f.load()
        im: Image.Image = f
        if im.mode in ("P", "PA", "LA", "RGBA") and mode != "RGBA":
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, rgba)
        return im.convert(mode) if im.mode != mode else im.copy()


def image_digest(path: str | Path) -> str:
    """sha256 of the decoded image (mode, size and pixels), cached per file version."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    hit = _digests.get(key)
    if hit is not None:
        return hit
    with Image.open(p) as im:
        im.load()
        h = hashlib.sha256(f"{im.mode}|{im.size[0]}x{im.size[1]}|".encode())
        h.update(im.tobytes())
        if im.mode in ("P", "PA") and im.palette is not None:
            h.update(bytes(im.getpalette() or []))
    digest = h.hexdigest()
    _digests[key] = digest
    return digest
