"""The search stage: top-k database items by Hamming distance for query codes or images.

The database: a run folder of the workflow (:mod:`lthash.evaluate.run_folder`: a seed's model
and codes file) or a codes file. Queries: rows of the codes file's query set, a codes / ``.npy``
file, or images encoded by the trained model: image files, folders or globs (prepared as the
training images were, :mod:`lthash.evaluate.query_images`) or an HDF5 image set. A model folder
and the codes file ``lthash encode`` wrote with it are enough: the codes file records the class
names, the dataset, the model's checksum and input shape, and each database item's source file
for image-file datasets (else its dataset index). Every answer says how far it is and flags a
query out of distribution (:mod:`lthash.evaluate.neighbours`). Results
(:mod:`lthash.evaluate.answers`): a table on stdout, JSON (``json``), and a contact sheet
(``grid``, :mod:`lthash.evaluate.grid`).

Exact scan (default): order by (distance, database row), deterministic. ``faiss`` backend:
``faiss.IndexBinaryFlat`` (exact distances; which items fill the last tied places is faiss's
choice), used only where faiss is installed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lthash.errors import LthashError
from lthash.evaluate.codes import CodeSet, read_codes
from lthash.evaluate.answers import label_value, as_text, answer, closing_line, format_answer, write_grid_of
from lthash.evaluate.neighbours import DEFAULT_QUANTILE, NeighbourProfile, database_profile, profile_path
from lthash.evaluate.run_folder import RunChoice, near_existing, resolve_run
from lthash.io import read_attrs, write_json

BACKENDS = ("exact", "faiss")
NUMPY_PAIRS = 20_000_000
"""Searches of at most this many (query, item) pairs run in numpy: 8-40 ns a pair (1-2 words),
against numba's start-up of 0.5-2 s the first time in a process."""


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
    if q_words.shape[0] * db_words.shape[0] <= NUMPY_PAIRS:
        return _numpy_topk(q_words, db_words, k)
    from lthash.evaluate import _code_kernels

    if threads is not None:
        set_threads(threads)
    from lthash.evaluate.metrics import _dynamic

    return _dynamic(_code_kernels.topk_kernel)(q_words, db_words, k, bits)


def _numpy_topk(q_words: np.ndarray, db_words: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_code_kernels.topk_kernel`'s answer (by distance, ties by row) with numpy, one query at
    a time (see :data:`NUMPY_PAIRS`)."""
    rows = np.empty((q_words.shape[0], k), np.int64)
    dist = np.empty((q_words.shape[0], k), np.int64)
    for i, query in enumerate(q_words):
        distances = np.bitwise_count(db_words ^ query).sum(axis=1, dtype=np.uint16)
        order = np.argsort(distances, kind="stable")[:k]
        rows[i], dist[i] = order, distances[order]
    return rows, dist


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
            from lthash.evaluate.metrics import pack_words

            words = pack_words(array, f"query codes in {path}")
            return np.ascontiguousarray(words.view(np.uint8)[:, : -(-bits // 8)]), None
        if array.dtype == np.uint8 and array.shape[1] == -(-bits // 8):
            return array, None
        raise LthashError(f"{path}: {array.shape[1]} columns match neither {bits} bits nor "
                          f"{-(-bits // 8)} packed bytes of the database codes")
    code_set = read_codes(path, group)
    if code_set.bits != bits:
        raise LthashError(f"{path} has {code_set.bits}-bit codes but the database has {bits}")
    return code_set.codes, code_set


def check_model_matches(model_dir: str | os.PathLike, codes: str | os.PathLike, attrs: dict[str, Any], bits: int,
                        device: str) -> dict[str, Any]:
    """The model's metadata, after checking that the codes file was encoded with this model:
    same code length, input shape and class count and, where the codes file records it, the
    same weights (sha256)."""
    from lthash.hashing.encode import load_run_model, model_checksum

    if not Path(model_dir).exists():
        raise LthashError(f"model folder not found: {model_dir}")
    _, meta = load_run_model(model_dir, device)
    hint = f"encode the database with this model: lthash encode --model {model_dir} --split SPLIT --out CODES"
    if int(meta["bits"]) != int(bits):
        raise LthashError(f"{codes} holds {bits}-bit codes but the model in {model_dir} gives {meta['bits']} bits; "
                          f"{hint}")
    shape = attrs.get("input_shape")
    if shape is not None and list(shape) != list(meta["input_shape"]):
        raise LthashError(f"{codes} was encoded from {attrs.get('dataset', 'a dataset')} images of shape {shape} "
                          f"(H x W x C) but the model in {model_dir} takes {meta['input_shape']}: another dataset; "
                          f"{hint}")
    names = attrs.get("class_names")
    if isinstance(names, list) and len(names) != int(meta["num_classes"]):
        raise LthashError(f"{codes} has {len(names)} classes ({attrs.get('dataset', 'its dataset')}) but the model in "
                          f"{model_dir} was trained on {meta['num_classes']}: another dataset; {hint}")
    if attrs.get("model_sha256") and attrs["model_sha256"] != model_checksum(model_dir):
        raise LthashError(f"{codes} was encoded with other weights than {model_dir}'s (recorded model: "
                          f"{attrs.get('model')}); {hint}")
    return meta


def encode_query_images(model_dir: str | os.PathLike, images: str | os.PathLike, group: str = "query",
                        device: str = "cpu") -> tuple[np.ndarray, Any]:
    """Packed codes of the images of ``group`` in an image-set file, by the trained model."""
    from lthash.hashing.encode import encode_array
    from lthash.io import read_image_set

    image_set = read_image_set(images, group)
    if image_set.images is None:
        raise LthashError(f"{images}/{group} holds no images")
    return np.asarray(encode_array(model_dir, image_set.images, device=device)), image_set


@dataclass
class Query:
    """One query: where it comes from, its label when known, its picture for the grid."""

    source: str
    label: Any = None
    row: int | None = None
    index: int | None = None
    image: np.ndarray | None = None


class Database:
    """The database set of a codes file with what names its items: class names, source files."""

    def __init__(self, codes: str | os.PathLike) -> None:
        self.path = Path(codes)
        self.set = read_codes(codes, "database")
        self.attrs = read_attrs(codes)
        names = self.attrs.get("class_names")
        self.class_names = [str(n) for n in names] if isinstance(names, list) else None
        self.root = self.attrs.get("root")
        self.dataset = self.attrs.get("dataset")

    @property
    def bits(self) -> int:
        return self.set.bits

    def class_of(self, label: Any) -> str | list[str] | None:
        """Class name(s) of a label value (index, or list of indices)."""
        if label is None:
            return None
        if isinstance(label, list):
            return [self._name(c) for c in label]
        return self._name(label)

    def _name(self, c: int) -> str:
        return self.class_names[c] if self.class_names and 0 <= c < len(self.class_names) else f"class {c}"

    def source(self, row: int, code_set: CodeSet | None = None) -> str:
        """Item ``row``'s file (under the dataset root) for image-file datasets, else its dataset
        index; of the database, or of ``code_set`` (another set of the same codes file)."""
        code_set = code_set or self.set
        if code_set.sources is not None:
            return str(Path(self.root) / code_set.sources[row]) if self.root else code_set.sources[row]
        return f"{self.dataset or 'dataset'} index {int(code_set.index[row])}"

    def pictures(self, rows: Sequence[int], shape: Sequence[int] | None, group: str = "database",
                 code_set: CodeSet | None = None) -> list[np.ndarray | None]:
        """Pixels of items of ``group`` for the grid: their source files, else the split file the
        codes file names when it is there, else None (a blank tile)."""
        from lthash.evaluate.query_images import load_query_image

        code_set = code_set or self.set
        if code_set.sources is not None and self.root:
            out: list[np.ndarray | None] = []
            for row in rows:
                try:
                    out.append(load_query_image(Path(self.root) / code_set.sources[row], shape)
                               if shape else None)
                except LthashError:
                    out.append(None)
            return out
        split = self._split_file()
        if split is not None:
            from lthash.io import open_complete_h5

            try:
                with open_complete_h5(split) as h5:
                    if group in h5 and "images" in h5[group] and len(h5[group]["images"]) == len(code_set):
                        unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
                        block = h5[group]["images"][unique]
                        return [block[i] for i in inverse]
            except LthashError:
                pass
        return [None] * len(rows)

    def _split_file(self) -> Path | None:
        """The split file the codes file names, as given or relative to a folder above the codes
        file (the workflow records paths relative to its folder), when it is there."""
        split = self.attrs.get("split")
        if not split:
            return None
        for base in (Path.cwd(), *self.path.resolve().parents):
            candidate = base / split
            if candidate.is_file():
                return candidate
        return None



def image_queries(files: Sequence[Path], shape: Sequence[int], class_names: Sequence[str] | None) -> list[Query]:
    """Prepared pixels of query image files, their class read from the folder name when it names one."""
    from lthash.evaluate.query_images import class_from_folder, load_query_image

    return [Query(source=str(path), label=class_from_folder(path, class_names), image=load_query_image(path, shape))
            for path in files]


@dataclass
class QuerySource:
    """The queries of one search: known up front (``queries`` with their ``packed`` codes) or
    image files still to read and encode (``files``), and how the JSON names their source."""

    queries: list[Query]
    packed: np.ndarray | None
    files: list[Path]
    shape: Sequence[int] | None
    describe: dict[str, Any]


def gather_queries(db: Database, codes: str | os.PathLike, query_index: str | None,
                   query_codes: str | os.PathLike | None, model: str | os.PathLike | None, specs: list[str],
                   group: str, device: str, pictures: bool) -> QuerySource:
    """Queries from rows of the codes file's query set, a codes / .npy file, or a model and images."""
    from lthash.evaluate.query_images import H5_SUFFIXES, collect_image_files

    shape = db.attrs.get("input_shape")
    if query_index is not None:
        query_set = read_codes(codes, "query")
        rows = parse_query_index(query_index, len(query_set))
        queries = [Query(source=db.source(r, query_set), label=label_value(query_set.labels[r]),
                         row=r, index=int(query_set.index[r])) for r in rows]
        if pictures:
            for q, picture in zip(queries, db.pictures(rows, shape, "query", query_set)):
                q.image = picture
        return QuerySource(queries, query_set.codes[rows], [], shape,
                           {"codes": str(codes), "group": "query", "rows": rows})
    if query_codes is not None:
        packed, code_set = load_query_codes(query_codes, db.bits, group)
        queries = [Query(source=f"{query_codes} row {r}", row=r,
                         label=label_value(code_set.labels[r]) if code_set is not None else None,
                         index=int(code_set.index[r]) if code_set is not None else None) for r in range(len(packed))]
        return QuerySource(queries, packed, [], shape, {"query_codes": str(query_codes)})
    meta = check_model_matches(model, codes, db.attrs, db.bits, device)
    shape = list(meta["input_shape"])
    if len(specs) == 1 and Path(specs[0]).suffix.lower() in H5_SUFFIXES and Path(specs[0]).is_file():
        packed, image_set = encode_query_images(model, specs[0], group, device)
        names = image_set.extra.get("files")
        queries = [Query(source=as_text(names[r]) if names is not None else f"{specs[0]}/{group} row {r}",
                         label=label_value(image_set.labels[r]), row=r, index=int(image_set.index[r]),
                         image=image_set.images[r]) for r in range(len(packed))]
        return QuerySource(queries, packed, [], shape, {"model": str(model), "images": str(specs[0]), "group": group})
    return QuerySource([], None, collect_image_files(specs), shape,
                       {"model": str(model), "images": [str(spec) for spec in specs]})


def run_search(codes: str | os.PathLike | None = None, out: str | os.PathLike | None = None, k: int = 10,
               backend: str = "exact", query_index: str | None = None, query_codes: str | os.PathLike | None = None,
               model: str | os.PathLike | None = None, images: Sequence[str] | str | os.PathLike | None = None,
               group: str = "query", device: str = "cpu", threads: int | None = None,
               grid: str | os.PathLike | None = None, echo: Callable[[str], None] | None = None,
               run: str | os.PathLike | None = None, seed: int | None = None,
               quantile: float = DEFAULT_QUANTILE) -> dict[str, Any]:
    """Top-k database items of each query: printed as tables (``echo``, default stdout), returned
    and written as JSON (``out``) and drawn as a contact sheet (``grid``).

    The database: a run folder (``run``: ``runs/<arm>/<method>-<backbone>-<bits>``, its seed
    ``seed`` or the first, :func:`resolve_run`; its model encodes query images) or a codes file
    (``codes``, with ``model`` for query images). Query images (``images``): files, folders or
    glob patterns, or one HDF5 image-set file (its ``group``). With image files the first query
    is answered alone, so the time to the first answer is that of one image; the rest are
    encoded and searched together.

    Every answer says how far it is (:mod:`lthash.evaluate.neighbours`, the profile made once
    per codes file and stored beside it): each result's ``closer``, and each query's ``ood``
    with ``out_of_distribution`` (the ``quantile`` sets the thresholds); flagged queries are
    marked in the table, the JSON and the contact sheet. ``seconds`` in the result: ``setup``
    (codes file, model and profile loaded), ``profile`` (of it, making the profile),
    ``first_answer`` (from the call to the first query's results), ``per_query`` (each later
    query; for codes, all queries' search time over their number; None for a single image),
    ``total``.
    """
    started = time.perf_counter()
    echo = echo or (lambda text: print(text, flush=True))
    specs = [str(images)] if isinstance(images, (str, os.PathLike)) else [str(i) for i in images or []]
    codes, model, choice = _database_of(codes, run, seed, model, bool(specs), echo)
    if len([s for s in (query_index, query_codes, model) if s is not None]) != 1:
        raise LthashError("give exactly one query source: --query-index, --query-codes or --images (with --run, "
                          "or --model and --codes)")
    if (model is None) != (not specs):
        raise LthashError("--model and --images go together")
    db = Database(codes)
    source = gather_queries(db, codes, query_index, query_codes, model, specs, group, device, grid is not None)
    profile_started = time.perf_counter()
    profile = database_profile(codes, db.set.codes, db.bits, model=model, quantile=quantile, device=device,
                               threads=threads, pictures=lambda rows: db.pictures(rows, source.shape))
    profile_seconds = time.perf_counter() - profile_started
    if profile.made:
        echo(f"made the database's nearest-neighbour profile in {profile_seconds:.1f} s, once for this codes file: "
             f"{profile_path(codes)}")
    setup = time.perf_counter() - started
    queries, entries = list(source.queries), []
    first_answer = None
    total_queries = len(source.files) or len(queries)
    batches = [(None, source.packed)] if not source.files else [(batch, None) for batch in
                                                                 (source.files[:1], source.files[1:]) if batch]
    for files, packed in batches:
        batch_queries = queries
        if files is not None:
            from lthash.hashing.encode import encode_array

            batch_queries = image_queries(files, source.shape, db.class_names)
            packed = encode_array(model, np.stack([q.image for q in batch_queries]), device=device)
            queries.extend(batch_queries)
        for entry in _answers(batch_queries, packed, db, profile, model, device, k, backend, threads):
            entries.append(entry)
            echo(format_answer(len(entries), total_queries, entry, profile))
        if first_answer is None:
            first_answer = time.perf_counter() - started
    timing = _timing(started, setup, profile_seconds, first_answer, len(entries), bool(source.files))
    rate = "" if timing["per_query"] is None else f", then {timing['per_query'] * 1000:.1f} ms per query"
    test = profile.describe(model is not None)
    echo(closing_line(entries, test))
    echo(f"{len(entries)} queries against {len(db.set)} database items: first answer after {first_answer:.3f} s"
         f" (setup {setup:.3f} s){rate}")
    result = {"bits": db.bits, "k": len(entries[0]["results"]), "backend": backend, "n_database": len(db.set),
              "database": str(codes), "dataset": db.dataset, "source": source.describe, "seconds": timing,
              "out_of_distribution": test, "queries": entries}
    if choice is not None:
        result["run"] = {"folder": str(choice.run), "seed": choice.seed, "seeds": list(choice.seeds)}
    if grid is not None:
        result["grid"] = {"path": str(grid), "size": list(write_grid_of(grid, queries, entries, db, source.shape))}
    if out is not None:
        write_json(out, result)
    return result


def _database_of(codes: str | os.PathLike | None, run: str | os.PathLike | None, seed: int | None,
                 model: str | os.PathLike | None, images: bool,
                 echo: Callable[[str], None]) -> tuple[str | os.PathLike, str | os.PathLike | None, RunChoice | None]:
    """(codes file, model for query images or None, the run's seed when ``run`` is given) of a
    search, checking that the database is given once and that the codes file is there."""
    choice = None
    if (run is None) == (codes is None):
        raise LthashError("give the database as a run folder (--run) or a codes file (--codes), one of them")
    if run is not None:
        if model is not None:
            raise LthashError("--run brings its own model: give --images without --model")
        choice = resolve_run(run, seed)
        echo(choice.describe())
        codes, model = choice.codes, (choice.model if images else None)
    elif seed is not None:
        raise LthashError("--seed picks a seed of a --run folder; a --codes file has one")
    if not Path(codes).exists():
        raise LthashError(f"missing file: {codes}; {near_existing(codes)}")
    return codes, model, choice


def _answers(queries: Sequence[Query], packed: np.ndarray, db: Database, profile: NeighbourProfile,
             model: str | os.PathLike | None, device: str, k: int, backend: str,
             threads: int | None) -> list[dict[str, Any]]:
    """The JSON entries of a batch of queries (their packed codes): top-k, and how far each is
    (with the activation statistics of their images when the model and the profile have them)."""
    statistics = None
    if model is not None and profile.activations is not None:
        from lthash.hashing.encode import activation_statistics

        statistics = activation_statistics(model, np.stack([q.image for q in queries]), device)
    found, dist = search_codes(packed, db.set.codes, db.bits, k, backend, threads)
    return [answer(q, rows, distances, db, profile, judged)
            for q, rows, distances, judged in zip(queries, found, dist, profile.judge(dist[:, 0], statistics))]


def _timing(started: float, setup: float, profile: float, first_answer: float, n: int,
            files: bool) -> dict[str, float | None]:
    """``seconds`` of a search's result (see :func:`run_search`)."""
    total = time.perf_counter() - started
    if files:
        per_query = (total - first_answer) / (n - 1) if n > 1 else None
    else:
        per_query = (total - setup) / n
    return {"setup": round(setup, 4), "profile": round(profile, 4), "first_answer": round(first_answer, 4),
            "per_query": None if per_query is None else round(per_query, 5), "total": round(total, 4)}
