"""ITQ, iterative quantisation (Gong & Lazebnik, CVPR 2011).

    V = (X - mu) W_pca,    min_{B, R} ||B - V R||_F^2,  R orthogonal, B in {-1, +1}
    repeat: B = sign(V R);   U S Z^T = svd(V^T B);   R = U Z^T       (orthogonal Procrustes)
    P = W_pca R
"""

from __future__ import annotations

import numpy as np

from lthash.hashing.methods.base import register
from lthash.hashing.methods.shallow import ShallowHash, pca


@register("itq")
class ITQ(ShallowHash):
    def fit_projection(self, centred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        self.check_dims(centred.shape[1])
        w_pca = pca(centred, self.bits)
        v = centred @ w_pca
        rotation, _ = np.linalg.qr(self.rng.standard_normal((self.bits, self.bits)))
        for _ in range(int(self.options["iterations"])):
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            u, _, zt = np.linalg.svd(v.T @ b)
            rotation = u @ zt
        error = float(np.mean((np.where(v @ rotation >= 0, 1.0, -1.0) - v @ rotation) ** 2))
        return w_pca @ rotation, {"quantisation_error": error}
