"""One shard of the balancing plan, whatever fills it (synthesis or resampled copies): its
seed, whether a finished one is already in place, and which of the class's real long-tail
training images it takes. Light (numpy and h5py only), so ``lthash resample`` starts fast.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lthash.errors import LthashError
from lthash.io import ImageSet, canonical_json, open_complete_h5, read_image_set, read_json


def shard_seed(seed: int, generator: str, class_index: int, purpose: str, shard: int) -> int:
    """A 63-bit seed unique to one shard (SHA-256 of its coordinates)."""
    key = canonical_json([int(seed), str(generator), int(class_index), str(purpose), int(shard)])
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) >> 1


def shard_is_complete(path: str | os.PathLike, expected: Mapping[str, Any]) -> bool:
    """True when ``path`` is a finished shard with the same coordinates and settings."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        with open_complete_h5(path) as h5:
            attrs = dict(h5["synthetic"].attrs)
    except (LthashError, KeyError, OSError):
        return False
    return all(str(attrs.get(key)) == str(value) for key, value in expected.items())


def init_choice(train_index: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Positions into the class's training images for ``count`` images: a permutation seeded by
    ``seed``, cycled, so every image is used ``count // n`` or one more times."""
    n = len(train_index)
    return np.random.default_rng(seed).permutation(n)[np.arange(count) % n]


def class_train_images(split_path: str | os.PathLike, class_index: int, class_name: str) -> ImageSet:
    """The class's long-tail training images (group ``train``): the only init images allowed."""
    train = read_image_set(split_path, "train")
    if train.images is None or train.labels.ndim != 1:
        raise LthashError("config key 'generate.synthesis.init': real needs the train group's images "
                          "with single-label classes")
    keep = train.labels == class_index
    if not keep.any():
        raise LthashError(f"config key 'generate.synthesis.init': real, but class {class_index} "
                          f"({class_name}) has no image in the split's train group")
    return ImageSet(images=train.images[keep], labels=train.labels[keep], index=train.index[keep])


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    plan = read_json(path)
    if "classes" not in plan or "class_names" not in plan:
        raise LthashError(f"{path} is not a balancing plan (written by lthash plan)")
    return plan
