"""Contact sheet of a search: one row per query, the query then its top-k results.

Every tile is ``TILE`` x ``TILE`` pixels (images scaled up with nearest neighbours, down with
bicubic, aspect kept, centred on grey) with a ``CAPTION``-pixel caption below; ``PAD`` pixels
between tiles and around the sheet, twice that (with a rule) between a query and its
results. A result tile is framed green when its class is the query's, red when not, and
unframed when the query's class is unknown. A query flagged out of distribution
(:mod:`lthash.evaluate.neighbours`) is framed orange with an orange band across its picture. A sheet of ``n`` queries with ``k`` results each
is :func:`grid_size` ``(n, k)`` pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from lthash.io import atomic_path

TILE = 96
CAPTION = 30
PAD = 6
FRAME = 4
BACKGROUND = (255, 255, 255)
EMPTY = (200, 200, 200)
COLOURS = {True: (0, 160, 60), False: (215, 25, 28)}
FLAGGED = (240, 140, 0)


@dataclass
class Tile:
    """One picture (uint8 H x W x C, or None when the item has no pixels to show) and its caption;
    ``correct`` frames it green / red, ``flagged`` (an out-of-distribution query) orange."""

    image: np.ndarray | None
    caption: str
    correct: bool | None = None
    flagged: bool = False


@dataclass
class Row:
    query: Tile
    results: list[Tile] = field(default_factory=list)


def grid_size(n_rows: int, n_results: int) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of ``n_rows`` queries with ``n_results`` results each."""
    return (PAD + (n_results + 1) * (TILE + PAD) + PAD, PAD + n_rows * (TILE + CAPTION + PAD))


def write_grid(path: str | os.PathLike, rows: list[Row]) -> tuple[int, int]:
    """Draw the sheet and write it as PNG, atomically; returns its (width, height)."""
    from PIL import Image, ImageDraw, ImageFont

    n_results = max((len(row.results) for row in rows), default=0)
    size = grid_size(len(rows), n_results)
    sheet = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for r, row in enumerate(rows):
        top = PAD + r * (TILE + CAPTION + PAD)
        for c, tile in enumerate([row.query, *row.results]):
            left = PAD + c * (TILE + PAD) + (PAD if c else 0)
            _draw_tile(sheet, draw, font, tile, left, top)
        if row.results:
            x = PAD + TILE + PAD
            draw.line([(x, top), (x, top + TILE + CAPTION)], fill=(90, 90, 90), width=1)
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return size


def fit_tile(image: np.ndarray, size: int, stretch: bool = False, downscale: str = "bicubic"):
    """A uint8 image (H x W, or H x W x C with C = 1, 3 or 4) as an RGB PIL image fitting a
    ``size`` x ``size`` tile: aspect kept (the longer side ``size``), or ``stretch``-ed to the
    square; scaled up with nearest neighbours, down with ``downscale`` ("bicubic" or "bilinear").
    The one tile maker of both contact sheets (this module's and the report's retrieval figure)."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    pil = Image.fromarray(image if image.ndim == 2 else image[..., :3]).convert("RGB")
    scale = size / max(pil.size)
    new = (size, size) if stretch else (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
    shrink = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[downscale]
    return pil.resize(new, Image.Resampling.NEAREST if scale >= 1 else shrink)


def _draw_tile(sheet, draw, font, tile: Tile, left: int, top: int) -> None:
    if tile.image is None:
        draw.rectangle([left, top, left + TILE - 1, top + TILE - 1], fill=EMPTY)
        draw.text((left + 6, top + TILE // 2 - 6), "no pixels", fill=(80, 80, 80), font=font)
    else:
        pil = fit_tile(tile.image, TILE)
        draw.rectangle([left, top, left + TILE - 1, top + TILE - 1], fill=EMPTY)
        sheet.paste(pil, (left + (TILE - pil.size[0]) // 2, top + (TILE - pil.size[1]) // 2))
    if tile.correct is not None:
        draw.rectangle([left, top, left + TILE - 1, top + TILE - 1], outline=COLOURS[tile.correct], width=FRAME)
    if tile.flagged:
        draw.rectangle([left, top, left + TILE - 1, top + TILE - 1], outline=FLAGGED, width=FRAME)
        draw.rectangle([left, top + TILE - 16, left + TILE - 1, top + TILE - 1], fill=FLAGGED)
        draw.text((left + 4, top + TILE - 14), "out of distribution", fill=(0, 0, 0), font=font)
    for i, line in enumerate(tile.caption.split("\n")[:2]):
        draw.text((left + 1, top + TILE + 2 + 13 * i), _fit(draw, font, line), fill=(20, 20, 20), font=font)


def _fit(draw, font, text: str) -> str:
    """``text`` cut (with an ellipsis) to the tile width."""
    if draw.textlength(text, font=font) <= TILE:
        return text
    while text and draw.textlength(text + "…", font=font) > TILE:
        text = text[:-1]
    return text + "…"
