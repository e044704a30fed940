"""Loading panel and reference images the way the identity models were fed in training."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def load_rgb(source: Path | Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white.

    dghs-imgutils (which CCIP and the person detector were published with) puts transparent images on a
    white background before converting; a plain convert("RGB") would put them on black instead.
    """
    image = Image.open(source) if isinstance(source, Path) else source
    image.load()
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        base.alpha_composite(rgba)
        return base.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
