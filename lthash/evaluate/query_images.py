"""Query images for ``lthash search``: files, folders or globs, prepared as the model's inputs.

A query image is converted to the model's channel count (grey or RGB) and resized as the
split stage resized the training images: the shorter side scaled to the model's input size
(bicubic), the longer one centre-cropped (:func:`lthash.data.images.decode_image`). A model
whose input is not square took its training images at their own size; a query is then scaled
to cover that size and centre-cropped.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lthash.data.images import IMAGE_SUFFIXES, UnreadableImage, cover_image, decode_image, is_image_file
from lthash.errors import LthashError

H5_SUFFIXES = (".h5", ".hdf5")


def collect_image_files(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``specs``: files, folders (searched recursively) or glob patterns,
    in the given order (folder and glob matches sorted), each file once."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not files:
                raise LthashError(f"folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.is_file():
            files = [path]
        elif glob.has_magic(str(spec)):
            files = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if is_image_file(Path(p)))
            if not files:
                raise LthashError(f"no image files match {spec}")
        else:
            raise LthashError(f"query image not found: {path}")
        found.extend(files)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise LthashError("no query images given")
    return unique


def load_query_image(path: str | os.PathLike, shape: Sequence[int]) -> np.ndarray:
    """uint8 H x W x C image of ``path`` prepared for a model taking ``shape`` = (H, W, C)."""
    height, width, channels = (int(s) for s in shape)
    try:
        if height == width:
            return decode_image(path, channels, height)
        image = decode_image(path, channels, None)
    except UnreadableImage as exc:
        raise LthashError(f"{path}: cannot read the image ({exc})") from exc
    return cover_image(image, height, width)


def class_from_folder(path: str | os.PathLike, class_names: Sequence[str] | None) -> int | None:
    """The class named by the image's folder: the exact name, else the one equal to it in
    lower-case letters and digits only ("t-shirt_top" is "T-shirt/top"), else None."""
    folder = Path(path).parent.name
    names = [str(n) for n in class_names or []]
    if folder in names:
        return names.index(folder)
    normalised = [_normalise(n) for n in names]
    key = _normalise(folder)
    return normalised.index(key) if key and normalised.count(key) == 1 else None


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())
