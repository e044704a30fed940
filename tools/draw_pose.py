"""Draws the shipped OpenPose-style pose maps under stories/control/ (run once; the PNGs are committed).

OpenPose's COCO-18 skeleton as the ControlNet extension renders it: black background, each limb a
coloured stroke, each keypoint a coloured dot, colours in OpenPose's order.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
         (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]  # fmt: skip
COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
           (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
           (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]  # fmt: skip

# A figure walking towards the right, pointing ahead (x, y as fractions of the image).
POINTING = [(0.52, 0.16), (0.50, 0.27), (0.40, 0.27), (0.36, 0.40), (0.38, 0.52), (0.60, 0.27),
            (0.72, 0.30), (0.86, 0.28), (0.44, 0.54), (0.40, 0.72), (0.36, 0.90), (0.56, 0.54),
            (0.62, 0.72), (0.66, 0.90), (0.50, 0.14), (0.55, 0.14), (0.47, 0.15), (0.58, 0.15)]  # fmt: skip


def draw(points: list[tuple[float, float]], size: tuple[int, int]) -> Image.Image:
    w, h = size
    im = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(im)
    px = [(x * w, y * h) for x, y in points]
    for k, (a, b) in enumerate(LIMBS):
        c = tuple(int(v * 0.6) for v in COLOURS[k])
        d.line([px[a], px[b]], fill=c, width=max(2, w // 64))
    r = max(2, w // 128)
    for k, (x, y) in enumerate(px):
        d.ellipse([x - r, y - r, x + r, y + r], fill=COLOURS[k])
    return im


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "stories" / "control"
    out.mkdir(exist_ok=True)
    draw(POINTING, (512, 768)).save(out / "pose-pointing.png", optimize=True)
