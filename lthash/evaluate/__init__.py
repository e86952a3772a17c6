"""Retrieval evaluation: packed codes, exact mAP, curves, search.

The metric functions live in :mod:`lthash.evaluate.metrics` (imported on first use, so
``lthash --help`` does not load numba).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "mean_average_precision": "lthash.evaluate.metrics",
    "score_codes": "lthash.evaluate.metrics",
    "RetrievalScores": "lthash.evaluate.metrics",
    "precision_at_k_curve": "lthash.evaluate.metrics",
    "radius_precision_recall": "lthash.evaluate.metrics",
    "precision_within_radius": "lthash.evaluate.metrics",
    "search_codes": "lthash.evaluate.search",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lthash.evaluate' has no attribute {name!r}")
