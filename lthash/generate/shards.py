"""One shard of the balancing plan, whatever fills it (synthesis or resampled copies): its
seed, whether a finished one is already in place, and which of the class's real long-tail
training images it takes. Light (numpy and h5py only), so ``lthash resample`` starts fast.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lthash.errors import LthashError
from lthash.io import canonical_json, open_complete_h5, read_attrs


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


TRAIN_GROUP = "train"


@dataclass(frozen=True)
class ClassImages:
    """uint8 N x H x W x C long-tail training images of one class, their source-dataset indices,
    the class's index and name, and the split's class names."""

    images: np.ndarray
    index: np.ndarray
    class_index: int
    class_name: str
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def class_train_images(split_path: str | os.PathLike, class_index: int, purpose: str) -> ClassImages:
    """Images of ``class_index`` in the split's long-tail ``train`` group (never query/database):
    the only real images image-to-image synthesis, resampling and personalisation may use.

    Works for splits storing pixels and for ``store: paths`` splits (only the class's files are
    decoded, through :class:`lthash.data.lazy.SplitImages`); a multi-label item belongs to every
    class it is labelled with. ``purpose`` ends the error raised when the class has no image.
    """
    from lthash.data.lazy import SplitImages

    class_names = list(read_attrs(split_path).get("class_names") or [])
    if not class_names:
        raise LthashError(f"{split_path} has no 'class_names' attribute")
    if not 0 <= class_index < len(class_names):
        raise LthashError(f"class index {class_index} is out of range: {split_path} has "
                          f"{len(class_names)} classes (0..{len(class_names) - 1})")
    train = SplitImages(split_path, TRAIN_GROUP)
    labels = np.asarray(train.labels)
    member = labels[:, class_index] > 0 if labels.ndim == 2 else labels == class_index
    name = class_names[class_index]
    if not member.any():
        raise LthashError(f"class {class_index} ({name!r}) has no images in the '{TRAIN_GROUP}' group "
                          f"of {split_path}: {purpose}")
    rows = np.flatnonzero(member)
    return ClassImages(np.asarray(train[rows]), np.asarray(train.index)[rows], class_index, name, class_names)
