"""Image decoding and resizing shared by the readers and the lazy path-backed loader.

Contract: images are uint8 arrays H x W x C with C = 1 (grey) or 3 (RGB). Resizing to a
square ``size`` scales the shorter side to ``size`` (bicubic) and centre-crops the longer
one, so aspect ratio is kept; a grey image stays one channel. A JPEG much larger than
``size`` is first decoded at a reduced DCT scale (PIL ``draft``, never below the target).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm", ".pbm"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})

T = TypeVar("T")
R = TypeVar("R")


class UnreadableImage(Exception):
    """An image file PIL cannot open or decode; the message says why."""


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an H x W x C uint8 image to size x size (shorter side, then centre crop)."""
    return cover_image(image, size, size)


def cover_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale an H x W x C uint8 image to cover ``height`` x ``width`` (bicubic), then centre-crop to it."""
    from PIL import Image

    h, w, channels = image.shape
    if (h, w) == (height, width):
        return image
    pil = Image.fromarray(image[..., 0] if channels == 1 else image, mode="L" if channels == 1 else "RGB")
    return _as_array(_cover_pil(pil, height, width), channels)


def _cover_pil(pil, height: int, width: int):
    from PIL import Image

    w, h = pil.size
    scale = max(height / h, width / w)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    if (new_w, new_h) != (width, height):
        pil = pil.crop((left, top, left + width, top + height))
    return pil


def _as_array(pil, channels: int) -> np.ndarray:
    array = np.asarray(pil, dtype=np.uint8)
    if channels == 1:
        return array.reshape(array.shape[0], array.shape[1], 1)
    return array


def resize_stack(images: np.ndarray, size: int | None, threads: int = 1) -> np.ndarray:
    """Resize every image of an N x H x W x C stack; ``None`` or the same size is a no-op."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    resized = parallel_map(lambda image: resize_image(image, size), list(images), threads, desc="resize")
    return np.stack(resized) if resized else np.zeros((0, size, size, images.shape[3]), dtype=np.uint8)


def probe_image(path: str | os.PathLike) -> tuple[str, tuple[int, int]]:
    """Open only the header of an image file and check its structure: (PIL mode, (w, h))."""
    from PIL import Image

    try:
        with Image.open(path) as pil:
            mode, size = pil.mode, pil.size
            pil.verify()
    except Exception as exc:  # PIL raises many types for broken files
        raise UnreadableImage(f"{type(exc).__name__}: {exc}") from exc
    return mode, size


def decode_image(path: str | os.PathLike, channels: int, size: int | None) -> np.ndarray:
    """Decode an image file to uint8 H x W x ``channels``, resized when ``size`` is set."""
    from PIL import Image

    try:
        with Image.open(path) as pil:
            mode = "L" if channels == 1 else "RGB"
            if size is not None and pil.format == "JPEG":
                scale = size / min(pil.size)
                pil.draft(mode, (max(size, round(pil.size[0] * scale)), max(size, round(pil.size[1] * scale))))
            pil = pil.convert(mode)
            if size is not None:
                pil = _cover_pil(pil, size, size)
            return _as_array(pil, channels)
    except Exception as exc:  # truncated data, unknown format, decoder errors
        raise UnreadableImage(f"{type(exc).__name__}: {exc}") from exc


def channels_for_modes(modes: Iterable[str]) -> int:
    """1 when every image is grey, else 3 (colour images force RGB for all)."""
    return 1 if all(mode in GREY_MODES for mode in modes) else 3


def parallel_map(func: Callable[[T], R], items: Sequence[T], threads: int, desc: str = "") -> list[R]:
    """``[func(x) for x in items]`` on ``threads`` threads (PIL decoding releases the GIL).

    Shows a progress bar on stderr for long runs (1000 items or more) when ``desc`` is given.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, file=sys.stderr, mininterval=2.0,
               disable=not desc or len(items) < 1000)
    results: list[R] = []
    with bar:
        if threads <= 1 or len(items) < 64:
            for item in items:
                results.append(func(item))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for result in pool.map(func, items):
                    results.append(result)
                    bar.update()
    return results


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
