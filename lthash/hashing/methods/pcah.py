"""PCAH, PCA hashing (Wang et al. 2010): P = top-``bits`` principal directions, bit = [(x - mu) P > 0]."""

from __future__ import annotations

import numpy as np

from lthash.hashing.methods.base import register
from lthash.hashing.methods.shallow import ShallowHash, pca


@register("pcah")
class PCAH(ShallowHash):
    def fit_projection(self, centred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        self.check_dims(centred.shape[1])
        return pca(centred, self.bits), {}
