"""A procedural dataset of ten shape classes, drawn from a seed: a dataset no default was tuned on.

Each image is a 28 x 28 grey drawing of one shape on a noisy background: random size (40-90 % of
the side), rotation, centre offset, outline or filled, stroke width and grey levels, plus two
faint clutter strokes. Drawn at 4x and reduced with a box filter, so edges are anti-aliased.
The same ``seed`` and ``per_class`` give the same pixels on every machine (numpy's PCG64 and
PIL's polygon rasteriser only).
"""

from __future__ import annotations

import math

import numpy as np

SHAPE_CLASSES = ("circle", "square", "triangle", "pentagon", "hexagon", "star", "cross", "ring",
                 "diamond", "crescent")
#: The dataset ``shapes`` (``dataset.name: shapes``): images per class and the seed they are drawn from.
PER_CLASS = 260
SEED = 0
_SIDE = 28
_SCALE = 4


def _regular(sides: int, radius: float, angle: float) -> list[tuple[float, float]]:
    return [(radius * math.cos(angle + 2 * math.pi * k / sides), radius * math.sin(angle + 2 * math.pi * k / sides))
            for k in range(sides)]


def _star(radius: float, angle: float) -> list[tuple[float, float]]:
    return [((radius if k % 2 == 0 else 0.42 * radius) * math.cos(angle + math.pi * k / 5),
             (radius if k % 2 == 0 else 0.42 * radius) * math.sin(angle + math.pi * k / 5)) for k in range(10)]


def _cross(radius: float, angle: float) -> list[tuple[float, float]]:
    arm = 0.32 * radius
    corners = [(arm, radius), (arm, arm), (radius, arm), (radius, -arm), (arm, -arm), (arm, -radius),
               (-arm, -radius), (-arm, -arm), (-radius, -arm), (-radius, arm), (-arm, arm), (-arm, radius)]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x * cos - y * sin, x * sin + y * cos) for x, y in corners]


def _diamond(radius: float, angle: float) -> list[tuple[float, float]]:
    corners = [(radius, 0.0), (0.0, 0.55 * radius), (-radius, 0.0), (0.0, -0.55 * radius)]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x * cos - y * sin, x * sin + y * cos) for x, y in corners]


def draw_shape(name: str, rng: np.random.Generator) -> np.ndarray:
    """One ``(28, 28)`` uint8 image of shape ``name`` with the random variations of the module doc."""
    from PIL import Image, ImageDraw

    big = _SIDE * _SCALE
    background = float(rng.uniform(0, 60))
    ink = float(rng.uniform(150, 255))
    canvas = Image.new("F", (big, big), background)
    pen = ImageDraw.Draw(canvas)
    radius = float(rng.uniform(0.20, 0.45)) * big
    cx, cy = (big / 2 + float(rng.uniform(-0.12, 0.12)) * big for _ in range(2))
    angle = float(rng.uniform(0, 2 * math.pi))
    filled = bool(rng.random() < 0.5)
    width = int(rng.integers(2, 4)) * _SCALE
    for _ in range(2):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, big, size=4))
        pen.line([(x0, y0), (x1, y1)], fill=background + 0.35 * (ink - background), width=_SCALE)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if name in ("circle", "ring"):
        inner = 0.55 * radius if name == "ring" else None
        if filled or name == "ring":
            pen.ellipse(box, fill=ink)
            if inner is not None:
                pen.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=background)
        else:
            pen.ellipse(box, outline=ink, width=width)
    elif name == "crescent":
        pen.ellipse(box, fill=ink)
        shift = 0.45 * radius
        dx, dy = shift * math.cos(angle), shift * math.sin(angle)
        pen.ellipse([box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy], fill=background)
    else:
        polygons = {"square": lambda: _regular(4, radius, angle), "triangle": lambda: _regular(3, radius, angle),
                    "pentagon": lambda: _regular(5, radius, angle), "hexagon": lambda: _regular(6, radius, angle),
                    "star": lambda: _star(radius, angle), "cross": lambda: _cross(radius, angle),
                    "diamond": lambda: _diamond(radius, angle)}
        points = [(cx + x, cy + y) for x, y in polygons[name]()]
        if filled:
            pen.polygon(points, fill=ink)
        else:
            pen.line(points + points[:1], fill=ink, width=width, joint="curve")
    pixels = np.asarray(canvas, dtype=np.float64).reshape(_SIDE, _SCALE, _SIDE, _SCALE).mean(axis=(1, 3))
    pixels += rng.normal(0.0, float(rng.uniform(6, 20)), size=pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def draw_shapes(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of every class of :data:`SHAPE_CLASSES`: ``(images (N, 28, 28, 1) uint8,
    labels (N,) int64)``, class by class, every image from one ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    images = [draw_shape(name, rng) for name in SHAPE_CLASSES for _ in range(per_class)]
    labels = np.repeat(np.arange(len(SHAPE_CLASSES), dtype=np.int64), per_class)
    return np.stack(images)[..., None], labels
