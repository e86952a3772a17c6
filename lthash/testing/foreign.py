"""Foreign query images: what the out-of-distribution flag of ``lthash search`` is measured on.

Three kinds, each as uint8 N x H x W x C at a model's input shape:

* ``digits``: scikit-learn's 8 x 8 handwritten digits (0-16 grey levels scaled to 0-255), resized
  bilinearly: another dataset, light strokes on black like Fashion-MNIST;
* ``inverted``: in-domain images with their grey levels inverted (255 - x): a dark garment on white;
* ``noise``: independent uniform grey levels.

``DIGITS_SELECTION`` digits (a seeded permutation's first ones), inverted validation images and
noise of seed 1 were what the statistic was chosen on (README, search); :func:`foreign_images`
draws the digits from the rest, so figures measured with it are on images that choice never saw.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lthash.errors import LthashError

KINDS = ("digits", "inverted", "noise")
DIGITS_SELECTION = 500


def foreign_images(kind: str, shape: Sequence[int], n: int, in_domain: np.ndarray | None = None,
                   seed: int = 2) -> np.ndarray:
    """``n`` foreign images of ``kind`` at ``shape`` (H, W, C); ``inverted`` inverts the first
    ``n`` of ``in_domain`` (uint8 images at that shape)."""
    height, width, channels = (int(s) for s in shape)
    if kind == "digits":
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits().images
        order = np.random.default_rng(0).permutation(len(digits))[DIGITS_SELECTION:]
        if n > len(order):
            raise LthashError(f"{n} digits asked for; {len(order)} are outside the selection set")
        out = np.stack([np.asarray(Image.fromarray(np.rint(digits[i] * 255 / 16).astype(np.uint8))
                                   .resize((width, height), Image.Resampling.BILINEAR)) for i in order[:n]])
        return np.repeat(out[..., None], channels, axis=3)
    if kind == "inverted":
        if in_domain is None or len(in_domain) < n:
            raise LthashError(f"inverted images need {n} in-domain images")
        return 255 - np.asarray(in_domain[:n], dtype=np.uint8).reshape(n, height, width, channels)
    if kind == "noise":
        return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, channels), dtype=np.uint8)
    raise LthashError(f"unknown foreign image kind {kind!r} (known: {', '.join(KINDS)})")
