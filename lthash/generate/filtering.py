"""Which synthetic candidates a filtered shard keeps (``generate.filter_judge.keep``).

A shard with ``synthesis.filter_factor`` f > 1 draws ceil(f x count) candidates and keeps
``count`` of them, in drawing order, by one rule over the filter judge (trained on the
long-tail training set alone, :mod:`lthash.generate.judge`):

- ``most_confident``: the ``count`` candidates with the highest judge probability p(c | x) of
  the shard's class c.
- ``in_distribution`` (DiffuLT's approximately-in-distribution samples): with z(x) the judge's
  penultimate features, mu_c the mean of z over class c's long-tail training images and
  r_c = max_i ||z_i - mu_c|| over them, a candidate is in distribution when
  d(x) = ||z(x) - mu_c|| <= r_c. The first ``count`` in-distribution candidates in drawing
  order are kept (so the kept set is as varied as the draw); when fewer are in distribution,
  the out-of-distribution candidates nearest mu_c fill the shard.

The class reference (mu_c, r_c) is computed once by ``lthash filter-judge`` and stored beside
the judge's weights (:data:`REFERENCE_FILE`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lthash.errors import LthashError

KEEP_RULES = ("most_confident", "in_distribution")
REFERENCE_FILE = "class_features.safetensors"


def class_feature_reference(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu: C x D class means of ``features``, r: C largest distances of a class's rows to its mean).

    A class without rows gets a NaN mean and radius (no candidate of it is in distribution).
    """
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    centres = np.full((num_classes, features.shape[1]), np.nan)
    radii = np.full(num_classes, np.nan)
    for c in range(num_classes):
        members = features[labels == c]
        if len(members):
            centres[c] = members.mean(0)
            radii[c] = np.linalg.norm(members - centres[c], axis=1).max()
    return centres, radii


def keep_most_confident(probabilities: np.ndarray, class_index: int, count: int) -> np.ndarray:
    """Positions of the ``count`` rows with the highest probability of ``class_index``, ascending."""
    order = np.argsort(-probabilities[:, class_index], kind="stable")
    return np.sort(order[:count])


def keep_in_distribution(distances: np.ndarray, radius: float, count: int) -> np.ndarray:
    """Positions kept by the in-distribution rule, ascending: the first ``count`` rows with
    distance <= ``radius``, topped up by the nearest of the rest."""
    distances = np.asarray(distances, dtype=np.float64)
    inside = np.flatnonzero(distances <= radius)[:count]
    if len(inside) < count:
        outside = np.setdiff1d(np.arange(len(distances)), inside)
        nearest = outside[np.argsort(distances[outside], kind="stable")][: count - len(inside)]
        inside = np.concatenate([inside, nearest])
    return np.sort(inside)


def write_reference(folder: str | os.PathLike, centres: np.ndarray, radii: np.ndarray) -> None:
    from lthash.io import save_safetensors

    save_safetensors(Path(folder) / REFERENCE_FILE, {"centres": torch.from_numpy(np.asarray(centres)),
                                                     "radii": torch.from_numpy(np.asarray(radii))})


def read_reference(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    from lthash.io import load_safetensors

    path = Path(folder) / REFERENCE_FILE
    if not path.exists():
        raise LthashError(f"filter judge {folder} has no {REFERENCE_FILE} (written by lthash filter-judge since "
                          f"generate.filter_judge.keep: in_distribution exists): rerun lthash filter-judge")
    tensors, _ = load_safetensors(path)
    return tensors["centres"].numpy(), tensors["radii"].numpy()


def keep_rule(record: dict[str, Any]) -> str:
    """The rule a filter judge's record (``judge.json``) was written for."""
    return str(record.get("settings", {}).get("keep", "most_confident"))


def keep_candidates(images: np.ndarray, judge_dir: str | os.PathLike, rule: str, class_index: int,
                    count: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(kept positions, ascending; what the shard records per kept image) under ``rule``."""
    from lthash.generate.judge import judge_weights, load_judge

    judge, _ = load_judge(judge_weights(judge_dir))
    if rule == "most_confident":
        probabilities = judge.predict_proba(images)
        keep = keep_most_confident(probabilities, class_index, count)
        return keep, {"candidate": keep.astype(np.int64),
                      "judge_probability": probabilities[keep, class_index].astype(np.float32)}
    if rule == "in_distribution":
        centres, radii = read_reference(judge_dir)
        distances = np.linalg.norm(judge.features(images).astype(np.float64) - centres[class_index], axis=1)
        keep = keep_in_distribution(distances, float(radii[class_index]), count)
        return keep, {"candidate": keep.astype(np.int64),
                      "judge_distance": (distances[keep] / radii[class_index]).astype(np.float32)}
    raise LthashError(f"config key 'generate.filter_judge.keep': {rule!r} is not one of {list(KEEP_RULES)}")
