"""Read a split group's images whether the file holds pixels or paths (``dataset.store: paths``).

Contract: ``SplitImages(split, group)[i]`` is uint8 H x W x C and ``[array_of_indices]`` is
N x H x W x C, the same for both storage modes. With paths, each file is decoded on access
from the split's ``root`` attribute, converted to its channel count and resized to its
image size exactly as the split stage did (shorter side, centre crop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lthash.data.images import UnreadableImage, decode_image
from lthash.errors import LthashError
from lthash.io import open_complete_h5, read_attrs, read_image_set


class SplitImages:
    """Random access to one group's images, pixels or lazily decoded paths."""

    def __init__(self, split: str | Path, group: str, root: str | Path | None = None) -> None:
        self.split = Path(split)
        self.group = group
        attrs = read_attrs(split)
        data = read_image_set(split, group, load_images=False)
        self.labels = data.labels
        self.index = data.index
        self.paths = data.paths
        self.shape = tuple(int(s) for s in attrs.get("image_shape", ()))
        self.root = Path(root or attrs.get("root") or ".")
        if self.paths is None:
            with open_complete_h5(split) as h5:
                if "images" not in h5[group]:
                    raise LthashError(f"{split}/{group} holds neither images nor paths")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._take(np.array([int(key)]))[0]
        return self._take(np.arange(len(self))[key])

    def _take(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        positions = positions % max(len(self), 1)
        if self.paths is None:
            order = np.argsort(positions, kind="stable")
            unique, inverse = np.unique(positions[order], return_inverse=True)
            with open_complete_h5(self.split) as h5:
                block = h5[self.group]["images"][unique] if len(unique) else np.zeros((0,) + self.shape, np.uint8)
            out = np.empty((len(positions),) + block.shape[1:], dtype=np.uint8)
            out[order] = block[inverse]
            return out
        height, width, channels = self.shape
        out = np.empty((len(positions), height, width, channels), dtype=np.uint8)
        for j, pos in enumerate(positions):
            path = self.root / self.paths[pos]
            try:
                image = decode_image(path, channels, height)
            except UnreadableImage as exc:
                raise LthashError(f"{path}: cannot read image listed in {self.split}/{self.group}: {exc}") from exc
            out[j] = image
        return out
