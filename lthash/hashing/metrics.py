"""Validation mAP for model selection (validation images vs the rest of the training set).

Hamming ranking with a stable sort (ties keep database order); AP is normalised by the
relevant items retrieved within the cut-off and a query with none scores 0. The evaluation
stage (lthash.evaluate) computes the reported figures; this is only for picking epochs.
"""

from __future__ import annotations

import numpy as np


def hamming_map(query: np.ndarray, database: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray,
                topk: int | None = None) -> float:
    """mAP@topk (all by default) of +-1 (or real, signed) codes ranked by Hamming distance."""
    q = np.where(np.asarray(query) > 0, 1.0, -1.0)
    db = np.where(np.asarray(database) > 0, 1.0, -1.0)
    distance = 0.5 * (q.shape[1] - q @ db.T)
    order = np.argsort(distance, axis=1, kind="stable")[:, :topk]
    relevant = (np.asarray(db_labels)[order] == np.asarray(query_labels)[:, None]).astype(np.float64)
    hits = relevant.cumsum(axis=1)
    precision = hits / np.arange(1, relevant.shape[1] + 1)
    ap = (precision * relevant).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)
    return float(ap.mean()) if len(ap) else 0.0
