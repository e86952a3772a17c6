"""``lthash encode`` and :func:`encode_array`: images -> packed binary codes with a trained run."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from lthash.errors import LthashError


@functools.lru_cache(maxsize=4)
def _cached_model(model_dir: str, mtime: float, device: str):
    from lthash.hashing.model import read_model

    return read_model(model_dir, device)


def load_run_model(model_dir: str | Path, device: str = "cpu"):
    """(model in eval mode, metadata) of a run folder, cached per folder, file time and device."""
    from lthash.hashing.model import MODEL_FILE

    path = Path(model_dir) / MODEL_FILE
    if not path.exists():
        raise LthashError(f"{model_dir} is not a finished training run: {MODEL_FILE} missing")
    return _cached_model(str(Path(model_dir).resolve()), path.stat().st_mtime, device)


def encode_array(model_dir: str | Path, images_uint8: np.ndarray, device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """Packed codes (uint8 N x ceil(bits/8), MSB first, bit = [code > 0]) of uint8 N x H x W x C images."""
    from lthash.evaluate.codes import pack_codes
    from lthash.hashing.train import encode_images

    model, meta = load_run_model(model_dir, device)
    images = np.asarray(images_uint8)
    if images.ndim == 3:
        images = images[..., None]
    expected = tuple(meta["input_shape"])
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != expected:
        raise LthashError(f"images are {images.dtype} {tuple(images.shape[1:])}; the model in {model_dir} "
                          f"takes uint8 {expected} (H x W x C)")
    return pack_codes(encode_images(model, images, device, batch_size=batch_size))


def encode_split(model_dir: str | Path, split: str | Path, out: str | Path, device: str = "cpu",
                 batch_size: int = 256, groups: tuple[str, ...] = ("database", "query")) -> dict[str, Any]:
    """Write the codes file (lthash.evaluate.codes format) of the split's database and query sets."""
    from lthash.evaluate.codes import CodeSet, write_codes
    from lthash.io import read_image_set

    _, meta = load_run_model(model_dir, device)
    sets = {}
    for group in groups:
        data = read_image_set(split, group)
        if data.images is None:
            raise LthashError(f"{split}/{group} holds image paths, not pixels")
        codes = encode_array(model_dir, data.images, device, batch_size)
        sets[group] = CodeSet(codes=codes, labels=data.labels, index=data.index, bits=int(meta["bits"]))
    write_codes(out, sets, attrs={"model": str(model_dir), "method": meta["method"], "backbone": meta["backbone"],
                                  "split": str(split)})
    return {group: len(code_set) for group, code_set in sets.items()}
