"""LSH, random-hyperplane hashing (Charikar 2002): P has i.i.d. N(0, 1) entries, bit = [(x - mu) P > 0]."""

from __future__ import annotations

import numpy as np

from lthash.hashing.methods.base import register
from lthash.hashing.methods.shallow import ShallowHash


@register("lsh")
class LSH(ShallowHash):
    def fit_projection(self, centred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        return self.rng.standard_normal((centred.shape[1], self.bits)), {}
