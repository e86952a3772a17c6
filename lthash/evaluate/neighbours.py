"""How far a search answer is, measured against the database's own nearest neighbours.

Two statistics, each with a reference distribution made from the database alone (never from
queries), stored once per codes file beside it (``codes.h5`` -> ``codes.neighbours.npz``,
written atomically, keyed by the codes file's sha256 and reused while it is the same file):

* **Hamming**: the distance from a query's code to its nearest database code, against the
  database items' leave-one-out nearest-neighbour distances (the second of each one's top-2,
  itself being the first; of :data:`HAMMING_CALIBRATION` of them at most). Every answer carries ``closer``: the share of database items whose own
  nearest neighbour is strictly closer than the answer's distance.
* **Activations** (for query images, with the model): the cosine distance from the query's
  activation statistics (:func:`lthash.hashing.encode.activation_statistics`: each backbone
  activation's per-channel mean and standard deviation) to the nearest database image's (all
  of them, or :data:`ACTIVATION_REFERENCE` spread evenly over the database), against the
  leave-one-out nearest-neighbour distances of :data:`ACTIVATION_CALIBRATION` of them.

A statistic's threshold is the ``quantile`` (default 0.99) of its reference distribution: the
smallest value t with at least that share of reference items at or below t. A query is
flagged out of distribution when a statistic it has is beyond its threshold. An in-domain
query, drawn like the database items, then trips each statistic with probability about
1 - quantile, so at most about 2 % are flagged at 0.99. Hamming distances alone miss most
foreign images (a network maps any image to some code near a class's); the activations see
them (measured in the README, benchmarks/bench_ood.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lthash.errors import LthashError

PROFILE_SUFFIX = ".neighbours.npz"
DEFAULT_QUANTILE = 0.99
ACTIVATION_REFERENCE = 20000
"""At most this many database images (evenly spaced rows; all of the default's 20,000) form the
activation reference: its one-time cost is one forward pass of each."""
HAMMING_CALIBRATION = 20000
"""At most this many database items (evenly spaced; all of the default's 20,000) give the Hamming
leave-one-out distribution, each against every database item: a larger database costs this
many searches, not its square."""
ACTIVATION_CALIBRATION = 2000
"""This many reference images (evenly spaced) give the activation statistic's leave-one-out
distribution, each against every other reference image."""
_CHUNK = 1024
_KEYS = {"codes_sha256", "model_sha256", "hamming", "activation_rows", "activation_reference", "activation_loo",
         "activations_missing"}


def profile_path(codes: str | os.PathLike) -> Path:
    """The profile's file beside a codes file: ``codes.h5`` -> ``codes.neighbours.npz``."""
    codes = Path(codes)
    return codes.with_name(codes.stem + PROFILE_SUFFIX)


def hamming_leave_one_out(codes: np.ndarray, bits: int, threads: int | None = None,
                          most: int = HAMMING_CALIBRATION) -> np.ndarray:
    """The Hamming distance of each item (of at most ``most``, evenly spaced) to its nearest
    other item among all rows of packed uint8 ``codes`` (int64; a duplicate code gives 0).
    Needs at least two items."""
    from lthash.evaluate.search import search_codes

    if len(codes) < 2:
        raise LthashError(f"a nearest-neighbour profile needs at least 2 database items, got {len(codes)}")
    rows = _spread(len(codes), most)
    _, dist = search_codes(codes[rows], codes, bits, k=2, threads=threads)
    return dist[:, 1]  # the first is the item itself, or an identical code


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32; a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def nearest_cosine(queries: np.ndarray, reference: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
    """Cosine distance (1 - cosine) of each unit row of ``queries`` to its nearest unit row of
    ``reference``; ``skip[i]`` (leave-one-out) is a reference row query i is not compared with."""
    out = np.empty(len(queries), np.float64)
    for start in range(0, len(queries), _CHUNK):
        similarity = queries[start: start + _CHUNK] @ reference.T
        if skip is not None:
            similarity[np.arange(similarity.shape[0]), skip[start: start + _CHUNK]] = -np.inf
        out[start: start + _CHUNK] = 1.0 - similarity.max(axis=1)
    return out


@dataclass(frozen=True)
class Reference:
    """The in-distribution values of one statistic (higher = farther) and its threshold quantile."""

    values: np.ndarray
    quantile: float = DEFAULT_QUANTILE

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise LthashError(f"the out-of-distribution quantile must be in (0, 1), got {self.quantile}")
        if len(self.values) == 0:
            raise LthashError("an empty reference distribution has no threshold")
        object.__setattr__(self, "values", np.sort(np.asarray(self.values, dtype=np.float64)))

    @property
    def threshold(self) -> float:
        """The smallest value t with at least ``quantile`` of the reference at or below t."""
        return float(np.quantile(self.values, self.quantile, method="inverted_cdf"))

    def closer(self, value: float | np.ndarray) -> np.ndarray:
        """Share of the reference strictly below ``value``."""
        return np.searchsorted(self.values, np.asarray(value, dtype=np.float64), side="left") / len(self.values)

    def beyond(self, value: float | np.ndarray) -> np.ndarray:
        """Whether ``value`` is beyond the threshold (flagged)."""
        return np.asarray(value, dtype=np.float64) > self.threshold


@dataclass
class NeighbourProfile:
    """A database's references: Hamming always; activations when they could be made (the
    model and the database's pixels were at hand, and the backbone has activations)."""

    hamming: Reference
    activations: Reference | None = None
    activation_reference: np.ndarray | None = None
    activations_missing: str = ""
    made: bool = False
    """Whether this call made the profile (and stored it) rather than reading it."""

    def judge(self, nearest: Sequence[int], statistics: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Per query: the Hamming distance of its nearest database item (``nearest``) and, where
        given and this profile has activations, its activation statistics (one row a query):
        each statistic's value, the share of the reference closer, whether it is beyond the
        threshold, and ``out_of_distribution`` (any statistic beyond)."""
        nearest = np.asarray(nearest, dtype=np.int64)
        entries = []
        hamming_closer, hamming_beyond = self.hamming.closer(nearest), self.hamming.beyond(nearest)
        distance = None
        if statistics is not None and self.activations is not None:
            distance = nearest_cosine(unit_rows(statistics), self.activation_reference)
        for i, d in enumerate(nearest):
            entry: dict[str, Any] = {"nearest_distance": int(d), "closer": round(float(hamming_closer[i]), 4),
                                     "hamming_beyond": bool(hamming_beyond[i])}
            flagged = bool(hamming_beyond[i])
            if distance is not None:
                beyond = bool(self.activations.beyond(distance[i]))
                entry.update(activation_distance=round(float(distance[i]), 6),
                             activation_closer=round(float(self.activations.closer(distance[i])), 4),
                             activation_beyond=beyond)
                flagged = flagged or beyond
            entry["out_of_distribution"] = flagged
            entries.append(entry)
        return entries

    def describe(self, images: bool) -> dict[str, Any]:
        """What a search's JSON records about the test: statistics, references, thresholds
        (the activations' only for ``images`` queries, and why not otherwise)."""
        quantile = self.hamming.quantile
        out: dict[str, Any] = {
            "quantile": quantile,
            "rule": f"flagged when a statistic is beyond the {quantile:g} quantile of its database reference",
            "hamming": {"statistic": "Hamming distance to the nearest database item",
                        "reference": f"leave-one-out nearest-neighbour distance of {len(self.hamming.values)} "
                                     f"database items, each against all the others",
                        "threshold": int(self.hamming.threshold)}}
        if images and self.activations is not None:
            out["activations"] = {
                "statistic": "cosine distance of the backbone's activation statistics (per-channel mean and "
                             "standard deviation of each activation) to the nearest reference database image",
                "reference": f"leave-one-out nearest-neighbour distance of {len(self.activations.values)} of "
                             f"the {len(self.activation_reference)} reference database images",
                "threshold": self.activations.threshold}
        else:
            out["activations"] = {"missing": self.activations_missing if images else
                                  "the queries are codes, not images"}
        return out


def database_profile(codes: str | os.PathLike, db_codes: np.ndarray, bits: int,
                     model: str | os.PathLike | None = None, pictures: Any = None,
                     quantile: float = DEFAULT_QUANTILE, device: str = "cpu",
                     threads: int | None = None, statistics: np.ndarray | None = None) -> NeighbourProfile:
    """The profile of a codes file's database, read from beside it when made from this very file
    (same sha256) and, with ``model``, with that model's weights; else made and stored there.

    ``pictures(rows)`` gives the database items' pixels (a list with None where an item has
    none); with ``model`` it feeds the activation reference. Without pixels the profile has
    Hamming only and says why (``activations_missing``). ``statistics``, when given, are the
    model's activation statistics of every database item (computed while encoding), used
    instead of a second pass over the pixels.
    """
    from lthash.generate.shipped import file_digest

    path = profile_path(codes)
    codes_sha = file_digest(Path(codes))
    model_sha = _model_digest(model) if model is not None else ""
    stored = _read_profile(path)
    if stored is not None and str(stored["codes_sha256"]) == codes_sha:
        if model is None or str(stored["model_sha256"]) == model_sha:
            return _profile_of(stored, quantile)
        hamming = stored["hamming"]
    else:
        hamming = hamming_leave_one_out(db_codes, bits, threads)
    arrays: dict[str, Any] = {"codes_sha256": codes_sha, "model_sha256": model_sha, "hamming": hamming,
                              "activation_rows": np.zeros(0, np.int64), "activation_reference": np.zeros((0, 0), np.float32),
                              "activation_loo": np.zeros(0), "activations_missing": "no model (queries given as codes)"}
    if model is not None:
        arrays.update(_activation_reference(model, len(db_codes), pictures, device, statistics))
    _write_profile(path, arrays)
    profile = _profile_of(arrays, quantile)
    profile.made = True
    return profile


def _model_digest(model: str | os.PathLike) -> str:
    from lthash.hashing.encode import model_checksum

    return model_checksum(model)


def _activation_reference(model: str | os.PathLike, n_database: int, pictures: Any, device: str,
                          given: np.ndarray | None = None) -> dict[str, Any]:
    """The activation arrays of the profile, or the reason there are none (``given``: every
    database item's statistics, already computed)."""
    from lthash.hashing.encode import activation_statistics

    rows = _spread(n_database, ACTIVATION_REFERENCE)
    if given is not None and len(given) == n_database and len(rows) >= 2:
        return _reference_arrays(rows, given[rows])
    images = pictures(rows.tolist()) if pictures is not None else [None]
    if any(image is None for image in images):
        return {"activations_missing": "the database's pixels are not at hand (the split file the codes file "
                                       "names, or its image files)"}
    if len(rows) < 2:
        return {"activations_missing": "fewer than 2 database items"}
    return _reference_arrays(rows, activation_statistics(model, np.stack(images), device))


def _reference_arrays(rows: np.ndarray, statistics: np.ndarray) -> dict[str, Any]:
    """The profile's activation arrays from the reference rows' statistics."""
    if statistics.shape[1] == 0:
        return {"activations_missing": "the model's backbone has no activations (raw pixels)"}
    reference = unit_rows(statistics).astype(np.float16).astype(np.float32)  # as stored
    calibration = _spread(len(reference), ACTIVATION_CALIBRATION)
    return {"activation_rows": rows, "activation_reference": reference.astype(np.float16),
            "activation_loo": nearest_cosine(reference[calibration], reference, skip=calibration),
            "activations_missing": ""}


def _spread(n: int, most: int) -> np.ndarray:
    """At most ``most`` of the positions 0..n-1, evenly spaced (all of them when n <= most)."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(np.int64))


def _profile_of(arrays: Any, quantile: float) -> NeighbourProfile:
    activations = None
    reference = np.asarray(arrays["activation_reference"], dtype=np.float32)
    if reference.size:
        activations = Reference(np.asarray(arrays["activation_loo"]), quantile)
    return NeighbourProfile(Reference(np.asarray(arrays["hamming"]), quantile), activations,
                            reference if reference.size else None, str(arrays["activations_missing"]))


def _read_profile(path: Path) -> dict[str, Any] | None:
    """The stored arrays, or None when there is no usable file (absent, or from another version)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError):
        return None
    return arrays if set(arrays) >= _KEYS else None


def _write_profile(path: Path, arrays: dict[str, Any]) -> None:
    from lthash.io import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{key: np.asarray(value) for key, value in arrays.items()})
