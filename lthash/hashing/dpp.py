"""Fast greedy MAP inference for determinantal point processes (Chen, Zhang & Zhou, NeurIPS 2018).

Greedy MAP adds, at each step, the item j maximising log det(L_{S+j}) - log det(L_S) = log d_j^2,
where d_j^2 is the squared residual of item j after the Cholesky factor of the selected set.
The incremental Cholesky update keeps one row c_j per selected item:

    e_i = (L_{j i} - <c_j, c_i>) / d_j,   c_i <- [c_i, e_i],   d_i^2 <- d_i^2 - e_i^2

so k selections from n items cost O(n k^2) instead of k determinant evaluations.
"""

from __future__ import annotations

import numpy as np


def greedy_map_dpp(kernel: np.ndarray, k: int, epsilon: float = 1e-10) -> list[int]:
    """Indices of up to ``k`` items chosen greedily to maximise det(kernel[S, S]).

    ``kernel`` is a symmetric positive semi-definite (n, n) matrix. Selection stops early when
    every remaining item's residual d_i^2 falls below ``epsilon`` (the set is already spanning).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    n = kernel.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return []
    cis = np.zeros((k, n))
    di2s = np.diag(kernel).copy()
    selected = [int(np.argmax(di2s))]
    while len(selected) < k:
        step = len(selected) - 1
        j = selected[-1]
        dj = np.sqrt(di2s[j])
        eis = (kernel[j, :] - cis[:step, j] @ cis[:step, :]) / dj
        cis[step, :] = eis
        di2s = di2s - eis ** 2
        di2s[selected] = -np.inf
        nxt = int(np.argmax(di2s))
        if di2s[nxt] < epsilon:
            break
        selected.append(nxt)
    return selected


def quality_diversity_kernel(features: np.ndarray, centroid: np.ndarray, theta: float = 1.0) -> np.ndarray:
    """L = diag(q) S diag(q): S_ij = cosine(v_i, v_j) (diversity), q_i = exp(theta * cosine(v_i, m)) (quality).

    The quality term prefers samples similar to the class centroid m; the similarity term
    penalises picking near-duplicates. S is a Gram matrix of unit vectors, so L is PSD.
    """
    feats = np.asarray(features, dtype=np.float64)
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    centre = np.asarray(centroid, dtype=np.float64)
    centre = centre / max(float(np.linalg.norm(centre)), 1e-12)
    quality = np.exp(theta * (unit @ centre))
    return quality[:, None] * (unit @ unit.T) * quality[None, :]
