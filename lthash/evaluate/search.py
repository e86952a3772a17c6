"""The search stage: top-k database items by Hamming distance for query codes or images.

Exact scan (default): order by (distance, database row), deterministic. ``faiss`` backend:
``faiss.IndexBinaryFlat`` (exact distances; which items fill the last tied places is faiss's
choice), used only where faiss is installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lthash.errors import LthashError
from lthash.evaluate.codes import CodeSet, read_codes
from lthash.io import write_json

BACKENDS = ("exact", "faiss")


def search_codes(query_codes: np.ndarray, db_codes: np.ndarray, bits: int, k: int = 10,
                 backend: str = "exact", threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows and Hamming distances (each (queries, min(k, database))) of the nearest database
    items of packed uint8 query codes, nearest first, ties by row (exact backend)."""
    from lthash.evaluate.metrics import code_words, set_threads

    if backend not in BACKENDS:
        raise LthashError(f"search backend must be one of {list(BACKENDS)}, got {backend!r}")
    if k < 1:
        raise LthashError(f"k must be >= 1, got {k}")
    q_words, _ = code_words(query_codes, bits, "query codes")
    db_words, _ = code_words(db_codes, bits, "database codes")
    k = min(int(k), db_words.shape[0])
    if backend == "faiss":
        return _faiss_search(q_words, db_words, k)
    from lthash.evaluate import _kernels

    if threads is not None:
        set_threads(threads)
    from lthash.evaluate.metrics import _dynamic

    return _dynamic(_kernels.topk_kernel)(q_words, db_words, k, bits)


def _faiss_search(q_words: np.ndarray, db_words: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError as exc:
        raise LthashError("search backend 'faiss' needs faiss (pip install faiss-cpu)") from exc
    db_bytes = np.ascontiguousarray(db_words).view(np.uint8)
    q_bytes = np.ascontiguousarray(q_words).view(np.uint8)
    index = faiss.IndexBinaryFlat(db_bytes.shape[1] * 8)
    index.add(db_bytes)
    dist, rows = index.search(q_bytes, k)
    order = np.lexsort((rows, dist), axis=1)
    return np.take_along_axis(rows, order, 1).astype(np.int64), np.take_along_axis(dist, order, 1).astype(np.int64)


def _label_value(label: np.ndarray | np.integer) -> Any:
    label = np.asarray(label)
    return np.flatnonzero(label).tolist() if label.ndim == 1 else int(label)


def parse_query_index(text: str, n_query: int) -> list[int]:
    """``"0,5,7"`` -> rows of the codes file's query set, checked against its size."""
    try:
        rows = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise LthashError(f"--query-index must be comma-separated integers, got {text!r}") from exc
    if not rows:
        raise LthashError("--query-index is empty")
    bad = [r for r in rows if not 0 <= r < n_query]
    if bad:
        raise LthashError(f"--query-index rows {bad} are outside the query set (0..{n_query - 1})")
    return rows


def load_query_codes(path: str | os.PathLike, bits: int, group: str = "query") -> tuple[np.ndarray, CodeSet | None]:
    """Packed query codes from a codes file (HDF5, ``group``) or a ``.npy`` array of
    {-1,+1} / {0,1} rows (items x bits) or packed uint8 rows (items x ceil(bits/8))."""
    from lthash.evaluate.codes import pack_codes

    path = Path(path)
    if path.suffix == ".npy":
        if not path.exists():
            raise LthashError(f"missing file: {path}")
        array = np.load(path, allow_pickle=False)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2:
            raise LthashError(f"{path}: query codes must be a 2-D array, got shape {array.shape}")
        if array.shape[1] == bits and (bits != 1 or array.dtype != np.uint8):
            from lthash.evaluate.metrics import code_words

            code_words(array, None, f"query codes in {path}")
            return pack_codes(array), None
        if array.dtype == np.uint8 and array.shape[1] == -(-bits // 8):
            return array, None
        raise LthashError(f"{path}: {array.shape[1]} columns match neither {bits} bits nor "
                          f"{-(-bits // 8)} packed bytes of the database codes")
    code_set = read_codes(path, group)
    if code_set.bits != bits:
        raise LthashError(f"{path} has {code_set.bits}-bit codes but the database has {bits}")
    return code_set.codes, code_set


def encode_query_images(model_dir: str | os.PathLike, images: str | os.PathLike, group: str = "query",
                        device: str = "cpu") -> tuple[np.ndarray, Any]:
    """Packed codes of the images of ``group`` in an image-set file, by the trained model."""
    from lthash.io import read_image_set

    try:
        from lthash.hashing.encode import encode_array
    except ImportError as exc:
        raise LthashError(f"--model needs lthash.hashing.encode.encode_array, which is not available "
                          f"in this install ({exc})") from exc
    if not Path(model_dir).exists():
        raise LthashError(f"model folder not found: {model_dir}")
    image_set = read_image_set(images, group)
    if image_set.images is None:
        raise LthashError(f"{images}/{group} holds no images")
    return np.asarray(encode_array(model_dir, image_set.images, device=device)), image_set


def run_search(codes: str | os.PathLike, out: str | os.PathLike, k: int = 10, backend: str = "exact",
               query_index: str | None = None, query_codes: str | os.PathLike | None = None,
               model: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
               group: str = "query", device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Top-k database items of each query as JSON: row, dataset index, label, distance."""
    sources = [s for s in (query_index, query_codes, model) if s is not None]
    if len(sources) != 1:
        raise LthashError("give exactly one query source: --query-index, --query-codes or --model (+ --images)")
    if (model is None) != (images is None):
        raise LthashError("--model and --images go together")
    database = read_codes(codes, "database")
    labels: Sequence[Any]
    if query_index is not None:
        query_set = read_codes(codes, "query")
        rows = parse_query_index(query_index, len(query_set))
        packed = query_set.codes[rows]
        ids = [int(query_set.index[r]) for r in rows]
        labels = [_label_value(query_set.labels[r]) for r in rows]
        source = {"codes": str(codes), "group": "query", "rows": rows}
    elif query_codes is not None:
        packed, code_set = load_query_codes(query_codes, database.bits, group)
        rows = list(range(len(packed)))
        ids = [int(i) for i in code_set.index] if code_set is not None else rows
        labels = [_label_value(x) for x in code_set.labels] if code_set is not None else [None] * len(rows)
        source = {"query_codes": str(query_codes)}
    else:
        packed, image_set = encode_query_images(model, images, group, device)
        if packed.ndim != 2 or packed.shape[1] != database.codes.shape[1]:
            raise LthashError(f"the model in {model} gives codes of shape {packed.shape[1:]} but the database "
                              f"codes have {database.codes.shape[1]} bytes ({database.bits} bits)")
        rows = list(range(len(packed)))
        ids = [int(i) for i in image_set.index]
        labels = [_label_value(x) for x in image_set.labels]
        source = {"model": str(model), "images": str(images), "group": group}
    found, dist = search_codes(packed, database.codes, database.bits, k, backend, threads)
    queries = []
    for q, (row, ident, label) in enumerate(zip(rows, ids, labels)):
        queries.append({
            "row": row, "index": ident, "label": label,
            "results": [{"rank": r + 1, "row": int(j), "index": int(database.index[j]),
                         "label": _label_value(database.labels[j]), "distance": int(d)}
                        for r, (j, d) in enumerate(zip(found[q], dist[q]))],
        })
    result = {"bits": database.bits, "k": int(found.shape[1]), "backend": backend,
              "n_database": len(database), "database": str(codes), "source": source, "queries": queries}
    write_json(out, result)
    return result
