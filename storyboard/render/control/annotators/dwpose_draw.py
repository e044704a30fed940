"""The extension's ``draw_poses`` for DWPose results, on a black canvas: per person the body (limbs as
filled ellipses in OpenPose's 17 colours, stick width 4, the canvas then dimmed to 0.6, keypoints as
radius-4 dots in the 18 point colours), both hands (20 edges of width 2 coloured round the HSV hue
circle, blue radius-4 dots) and the face (white radius-3 dots).

The extension draws with OpenCV (``ellipse2Poly`` + ``fillConvexPoly``, ``circle``, ``line``); here
the same ellipse polygons (one point per degree, rounded as ``ellipse2Poly`` rounds) and the dots and
lines go through PIL's ImageDraw, so maps match in shape and colour, not bit for bit.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from storyboard.render.control.annotators.dwpose import Pose

STICK = 4
EPS = 0.01  # the extension skips hand and face points at the image's top or left edge
# Limbs by 1-based OpenPose point numbers, and the colours (RGB) of limbs and points, in order.
LIMBS = [
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
    (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
]  # fmt: skip
COLOURS = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]  # fmt: skip
HAND_EDGES = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
]  # fmt: skip
Point = tuple[float, float] | None


def hand_colour(i: int) -> tuple[int, int, int]:
    """Edge `i`'s colour: hue i/20 at full saturation and value, as 0-255 RGB."""
    r, g, b = colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def ellipse_polygon(centre: tuple[int, int], axes: tuple[int, int], angle: int) -> list[tuple[int, int]]:
    """OpenCV's ``ellipse2Poly`` over 0-360 degrees in steps of 1: rounded points, repeats dropped."""
    a, b = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    pts: list[tuple[int, int]] = []
    for deg in range(0, 361):
        x, y = axes[0] * math.cos(math.radians(deg)), axes[1] * math.sin(math.radians(deg))
        p = (round(centre[0] + x * a - y * b), round(centre[1] + x * b + y * a))
        if not pts or p != pts[-1]:
            pts.append(p)
    return pts


def _dot(draw: ImageDraw.ImageDraw, x: int, y: int, r: int, colour: tuple[int, int, int]) -> None:
    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def draw_body(canvas: NDArray[np.uint8], body: list[Point]) -> NDArray[np.uint8]:
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for (i, j), colour in zip(LIMBS, COLOURS, strict=False):
        p, q = body[i - 1], body[j - 1]
        if p is None or q is None:
            continue
        mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
        length = math.hypot(p[0] - q[0], p[1] - q[1])
        angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
        poly = ellipse_polygon((int(mx), int(my)), (int(length / 2), STICK), int(angle))
        draw.polygon(poly, fill=colour)
    dimmed = (np.asarray(img) * 0.6).astype(np.uint8)  # limbs show through at 0.6, dots at full colour
    img = Image.fromarray(dimmed)
    draw = ImageDraw.Draw(img)
    for pt, colour in zip(body, COLOURS, strict=False):
        if pt is not None:
            _dot(draw, int(pt[0]), int(pt[1]), 4, colour)
    return np.asarray(img).copy()


def draw_hand(canvas: NDArray[np.uint8], hand: list[Point] | None) -> NDArray[np.uint8]:
    if not hand:
        return canvas
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for k, (i, j) in enumerate(HAND_EDGES):
        p, q = hand[i], hand[j]
        if p is None or q is None:
            continue
        x1, y1, x2, y2 = int(p[0]), int(p[1]), int(q[0]), int(q[1])
        if min(x1, y1, x2, y2) > EPS:
            draw.line([(x1, y1), (x2, y2)], fill=hand_colour(k), width=2)
    for pt in hand:
        if pt is not None and int(pt[0]) > EPS and int(pt[1]) > EPS:
            _dot(draw, int(pt[0]), int(pt[1]), 4, (0, 0, 255))
    return np.asarray(img).copy()


def draw_face(canvas: NDArray[np.uint8], face: list[Point] | None) -> NDArray[np.uint8]:
    if not face:
        return canvas
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for pt in face:
        if pt is not None and int(pt[0]) > EPS and int(pt[1]) > EPS:
            _dot(draw, int(pt[0]), int(pt[1]), 3, (255, 255, 255))
    return np.asarray(img).copy()


def draw_poses(poses: list[Pose], h: int, w: int) -> NDArray[np.uint8]:
    """The (H, W, 3) map: every person's body, hands and face, in the extension's order."""
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    for pose in poses:
        canvas = draw_body(canvas, pose.body)
        canvas = draw_hand(canvas, pose.left_hand)
        canvas = draw_hand(canvas, pose.right_hand)
        canvas = draw_face(canvas, pose.face)
    return canvas
