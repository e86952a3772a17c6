"""Dataset readers, all from local files (nothing is downloaded).

Every reader returns a :class:`Dataset`: uint8 images N x H x W x C (or, with
``dataset.store: paths``, file paths relative to the root), int64 labels (N,), class names,
and where the dataset has one, its official split (``official["train"]``/``["test"]``: index
arrays into the pooled data). ``index`` in the split file is a position in this pooled data.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lthash.data.images import (
    UnreadableImage,
    channels_for_modes,
    decode_image,
    is_image_file,
    parallel_map,
    probe_image,
    resize_stack,
)
from lthash.errors import LthashError

log = logging.getLogger("lthash.data")

DEFAULT_FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_MAX_LISTED = 5


@dataclass
class Dataset:
    """A pooled dataset: pixels or paths, labels, class names, optional official split."""

    name: str
    labels: np.ndarray
    class_names: list[str]
    images: np.ndarray | None = None
    paths: list[str] | None = None
    root: str | None = None
    official: dict[str, np.ndarray] | None = None
    lists: dict[str, np.ndarray] | None = None
    skipped: list[str] = field(default_factory=list)
    image_shape: tuple[int, int, int] = (0, 0, 0)
    files: list[str] | None = None

    def describe(self, index: int) -> str:
        """How an error message names image ``index``: its file when there is one."""
        return self.files[index] if self.files is not None else f"image {index} of {self.name}"

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_dataset(cfg: Mapping[str, Any], threads: int = 1) -> Dataset:
    """Read the dataset the ``dataset`` config section names (validated here, defaults from the schema).

    Fails with :class:`LthashError` on a missing/corrupt file, an empty class or a dataset
    with a single class.
    """
    from lthash.config import validate_section

    cfg = validate_section("dataset", cfg)
    name = cfg["name"]
    store = cfg["store"]
    if store == "paths" and name not in ("imagefolder", "list"):
        raise LthashError(f"config key 'dataset.store': 'paths' works for imagefolder and list, not {name}")
    if store == "paths" and cfg["image_size"] is None:
        raise LthashError("config key 'dataset.image_size' must be set with dataset.store: paths "
                          "(the lazy reader needs one image size)")
    if name == "fashion-mnist":
        dataset = read_fashion_mnist(cfg["root"] or DEFAULT_FASHION_ROOT)
    elif name == "digits":
        dataset = read_digits()
    elif name == "shapes":
        dataset = read_shapes()
    elif name in ("cifar10", "cifar100"):
        from lthash.data.cifar import read_cifar

        dataset = read_cifar(_required_root(cfg, name), name)
    elif name == "imagefolder":
        dataset = read_imagefolder(_required_root(cfg, name), cfg["image_size"], cfg["on_corrupt"], store, threads)
    elif name == "list":
        dataset = read_lists(_required_root(cfg, name), cfg["list_files"], cfg["class_names"], cfg["image_size"],
                             cfg["on_corrupt"], store, threads)
    else:
        raise LthashError(f"config key 'dataset.name': unknown dataset {name!r}")
    if dataset.images is not None and cfg["image_size"] is not None:
        dataset.images = resize_stack(dataset.images, cfg["image_size"], threads)
    if dataset.images is not None:
        dataset.image_shape = tuple(int(s) for s in dataset.images.shape[1:])
    _check_classes(dataset)
    return dataset


def _required_root(cfg: Mapping[str, Any], name: str) -> str:
    root = cfg["root"]
    if not root:
        raise LthashError(f"config key 'dataset.root' is required for dataset {name}")
    if not Path(root).exists():
        raise LthashError(f"dataset root not found: {root} (config key 'dataset.root')")
    return str(root)


def _check_classes(dataset: Dataset) -> None:
    count = len(dataset.class_names)
    if count < 2:
        only = dataset.class_names[0] if dataset.class_names else "?"
        raise LthashError(f"dataset {dataset.name} has a single class ('{only}'); retrieval needs at least 2")
    if len(dataset) and (dataset.labels.min() < 0 or dataset.labels.max() >= count):
        raise LthashError(f"dataset {dataset.name}: labels outside 0..{count - 1}")


# --- Fashion-MNIST ---------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (uint8 data, optionally gzip-compressed), checking header and size."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise LthashError(f"missing file: {path}") from exc
    except (OSError, EOFError) as exc:
        raise LthashError(f"{path} is not a readable idx file: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise LthashError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise LthashError(f"{path}: size does not match its header shape {shape} (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_path(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            return candidate
    raise LthashError(f"missing file: {root / (stem + '.gz')} (config key 'dataset.root')")


def read_fashion_mnist(root: str) -> Dataset:
    """Fashion-MNIST idx files; train (60k) then test (10k) pooled, origin kept in ``official``."""
    folder = Path(root)
    parts, labels, official, start = [], [], {}, 0
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_path(folder, f"{prefix}-images-idx3-ubyte"))
        split_labels = read_idx(_idx_path(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or split_labels.ndim != 1 or len(images) != len(split_labels):
            raise LthashError(f"Fashion-MNIST {split} files in {folder} disagree: "
                              f"{images.shape} images, {split_labels.shape} labels")
        parts.append(images)
        labels.append(split_labels.astype(np.int64))
        official[split] = np.arange(start, start + len(images), dtype=np.int64)
        start += len(images)
    return Dataset(name="fashion-mnist", labels=np.concatenate(labels), class_names=list(FASHION_CLASSES),
                   images=np.concatenate(parts)[..., None], official=official, root=str(folder))


# --- scikit-learn digits ---------------------------------------------------------------------

def read_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, values 0..16 scaled to 0..255 (rounded)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    return Dataset(name="digits", labels=bunch.target.astype(np.int64),
                   class_names=[str(name) for name in bunch.target_names], images=images)


def read_shapes() -> Dataset:
    """The procedural shapes of :mod:`lthash.data.shapes`: 260 images per class from seed 0."""
    from lthash.data.shapes import PER_CLASS, SEED, SHAPE_CLASSES, draw_shapes

    images, labels = draw_shapes(PER_CLASS, SEED)
    return Dataset(name="shapes", labels=labels, class_names=list(SHAPE_CLASSES), images=images)


# --- image files: ImageFolder and list files --------------------------------------------------

def _read_files(root: Path, rel_paths: list[str], image_size: int | None, on_corrupt: str,
                store: str, threads: int) -> tuple[np.ndarray | None, np.ndarray, list[str], tuple[int, int, int]]:
    """Read (or, for store=paths, probe) files under ``root``.

    Returns (images or None, kept mask, skipped paths, image shape). Unreadable files fail
    the stage naming them, or with on_corrupt=skip are dropped and listed.
    """
    def probe(rel: str) -> tuple[str, tuple[int, int]] | str:
        try:
            return probe_image(root / rel)
        except UnreadableImage as exc:
            return str(exc)

    probes = parallel_map(probe, rel_paths, threads, desc="check images")
    bad = {i: p for i, p in enumerate(probes) if isinstance(p, str)}
    _handle_corrupt(root, rel_paths, bad, on_corrupt)
    keep = np.array([i not in bad for i in range(len(rel_paths))], dtype=bool)
    good = [p for p in probes if not isinstance(p, str)]
    channels = channels_for_modes(mode for mode, _ in good)
    if image_size is None and good:
        first_size = good[0][1]
        for rel, probed in zip(rel_paths, probes):
            if not isinstance(probed, str) and probed[1] != first_size:
                raise LthashError(f"{root / rel} is {probed[1][0]}x{probed[1][1]} but earlier images are "
                                  f"{first_size[0]}x{first_size[1]}; set config key 'dataset.image_size'")
    if image_size is not None:
        shape = (image_size, image_size, channels)
    else:
        shape = (good[0][1][1], good[0][1][0], channels) if good else (0, 0, channels)
    if store == "paths":
        return None, keep, [rel_paths[i] for i in sorted(bad)], shape

    def decode(rel: str) -> np.ndarray | str:
        try:
            return decode_image(root / rel, channels, image_size)
        except UnreadableImage as exc:
            return str(exc)

    kept_idx = np.flatnonzero(keep)
    decoded = parallel_map(decode, [rel_paths[i] for i in kept_idx], threads, desc="read images")
    late_bad = {int(kept_idx[j]): d for j, d in enumerate(decoded) if isinstance(d, str)}
    _handle_corrupt(root, rel_paths, late_bad, on_corrupt)
    keep[list(late_bad)] = False
    arrays = [d for d in decoded if not isinstance(d, str)]
    images = np.stack(arrays) if arrays else np.zeros((0,) + shape, dtype=np.uint8)
    skipped = [rel_paths[i] for i in sorted(set(bad) | set(late_bad))]
    return images, keep, skipped, shape


def _handle_corrupt(root: Path, rel_paths: list[str], bad: dict[int, str], on_corrupt: str) -> None:
    if not bad:
        return
    listed = "; ".join(f"{root / rel_paths[i]}: {why}" for i, why in list(sorted(bad.items()))[:_MAX_LISTED])
    more = f" (and {len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
    if on_corrupt == "fail":
        raise LthashError(f"{len(bad)} unreadable image(s): {listed}{more}; "
                          f"set config key 'dataset.on_corrupt: skip' to skip them")
    log.warning("skipping %d unreadable image(s): %s%s", len(bad), listed, more)


def imagefolder_classes(folder: Path) -> list[str]:
    """The class names of an ImageFolder tree: its sub-folders' names, sorted (= label order)."""
    if not folder.is_dir():
        raise LthashError(f"imagefolder root is not a folder: {folder}")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise LthashError(f"imagefolder root {folder} has no class sub-folders")
    return classes


def known_class_names(cfg: Mapping[str, Any]) -> list[str] | None:
    """The class names the ``dataset`` section gives without reading an image: fixed for the
    built-in datasets, an ImageFolder's sub-folders, a list dataset's ``class_names``; None
    where only reading the data tells (CIFAR's meta file, a list dataset's label width, a
    root that does not exist yet: the data stage names it)."""
    from lthash.config import validate_section

    cfg = validate_section("dataset", cfg)
    name = cfg["name"]
    if name == "fashion-mnist":
        return list(FASHION_CLASSES)
    if name == "digits":
        return read_digits().class_names
    if name == "shapes":
        from lthash.data.shapes import SHAPE_CLASSES

        return list(SHAPE_CLASSES)
    if name == "imagefolder" and cfg["root"] and Path(cfg["root"]).is_dir():
        return imagefolder_classes(Path(cfg["root"]))
    if name == "list":
        return list(cfg["class_names"]) if cfg["class_names"] else None
    return None


def read_imagefolder(root: str, image_size: int | None, on_corrupt: str, store: str,
                     threads: int = 1) -> Dataset:
    """One sub-folder per class (sorted names = label order), image files found recursively."""
    folder = Path(root)
    classes = imagefolder_classes(folder)
    rel_paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(p.relative_to(folder).as_posix() for p in (folder / name).rglob("*") if is_image_file(p))
        if not found:
            raise LthashError(f"class '{name}' is empty: no image files in {folder / name}")
        rel_paths.extend(found)
        labels.extend([label] * len(found))
    images, keep, skipped, shape = _read_files(folder, rel_paths, image_size, on_corrupt, store, threads)
    label_array = np.asarray(labels, dtype=np.int64)[keep]
    for label, name in enumerate(classes):
        if not np.any(label_array == label):
            raise LthashError(f"class '{name}' is empty: every image in {folder / name} is unreadable")
    kept_paths = [p for p, k in zip(rel_paths, keep) if k]
    return Dataset(name="imagefolder", labels=label_array, class_names=classes, images=images,
                   paths=kept_paths if store == "paths" else None, root=str(folder.resolve()),
                   skipped=skipped, image_shape=shape, files=kept_paths)


def _parse_label(values: list[str], width: int | None, where: str) -> tuple[int, int | None]:
    """A class index, or a one-hot vector of ``width`` 0/1 values; returns (label, width)."""
    if len(values) == 1:
        try:
            label = int(values[0])
        except ValueError:
            raise LthashError(f"{where}: label {values[0]!r} is not a class index") from None
        if label < 0 or (width is not None and label >= width):
            upper = f"0..{width - 1}" if width is not None else ">= 0"
            raise LthashError(f"{where}: class index {label} out of range ({upper})")
        return label, width
    if width is not None and len(values) != width:
        raise LthashError(f"{where}: label vector has {len(values)} values, expected {width} (one per class)")
    try:
        vector = [float(v) for v in values]
    except ValueError:
        raise LthashError(f"{where}: label vector holds a non-number") from None
    for value in vector:
        if value not in (0.0, 1.0):
            raise LthashError(f"{where}: label value {value:g} out of range (one-hot values are 0 or 1)")
    ones = [i for i, v in enumerate(vector) if v == 1.0]
    if len(ones) != 1:
        kind = "no class set" if not ones else f"{len(ones)} classes set (multi-label rows are not supported)"
        raise LthashError(f"{where}: label vector has {kind}")
    return ones[0], len(values)


def read_lists(root: str, list_files: Mapping[str, str], class_names: list[str] | None,
               image_size: int | None, on_corrupt: str, store: str, threads: int = 1) -> Dataset:
    """HashNet-style list files (``path label...`` per line, path relative to ``root``).

    Pooled order: database entries, then test entries, then train entries not in the
    database. Paths must stay inside the root (resolved); a missing image is named.
    """
    folder = Path(root).resolve()
    width = len(class_names) if class_names else None
    pool: dict[str, int] = {}
    pool_labels: list[int] = []
    lists: dict[str, list[int]] = {}
    missing: list[str] = []
    for split in ("database", "test", "train"):
        list_path = folder / list_files.get(split, f"{split}.txt")
        if not list_path.is_file():
            raise LthashError(f"missing list file: {list_path} (config key 'dataset.list_files.{split}')")
        seen: set[str] = set()
        members: list[int] = []
        for lineno, line in enumerate(list_path.read_text().splitlines(), 1):
            tokens = line.split()
            if not tokens:
                continue
            where = f"{list_path}:{lineno}"
            if len(tokens) < 2:
                raise LthashError(f"{where}: no label after the image path {tokens[0]!r}")
            label, width = _parse_label(tokens[1:], width, where)
            resolved = (folder / tokens[0]).resolve()
            if not resolved.is_relative_to(folder):
                raise LthashError(f"{where}: image path {tokens[0]!r} escapes the dataset root {folder}")
            key = resolved.relative_to(folder).as_posix()
            if key in seen:
                raise LthashError(f"{where}: image {key!r} is listed twice in {list_path.name}")
            seen.add(key)
            if not resolved.is_file():
                missing.append(f"{where}: {resolved}")
                continue
            if key in pool:
                if pool_labels[pool[key]] != label:
                    raise LthashError(f"{where}: image {key!r} has label {label} here but "
                                      f"{pool_labels[pool[key]]} in an earlier list")
            else:
                pool[key] = len(pool_labels)
                pool_labels.append(label)
            members.append(pool[key])
        if not members and not missing:
            raise LthashError(f"list file {list_path} lists no images")
        lists[split] = members
    if missing:
        more = f" (and {len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
        raise LthashError(f"{len(missing)} listed image(s) not found: {'; '.join(missing[:_MAX_LISTED])}{more}")
    labels = np.asarray(pool_labels, dtype=np.int64)
    count = width if width is not None else int(labels.max()) + 1
    names = list(class_names) if class_names else [f"class_{i:03d}" for i in range(count)]
    rel_paths = list(pool)
    images, keep, skipped, shape = _read_files(folder, rel_paths, image_size, on_corrupt, store, threads)
    new_index = np.cumsum(keep) - 1
    kept_lists = {split: np.asarray([new_index[i] for i in members if keep[i]], dtype=np.int64)
                  for split, members in lists.items()}
    for split, members in kept_lists.items():
        if not len(members):
            raise LthashError(f"list {split}: every listed image is unreadable")
    kept_paths = [p for p, k in zip(rel_paths, keep) if k]
    return Dataset(name="list", labels=labels[keep], class_names=names, images=images,
                   paths=kept_paths if store == "paths" else None,
                   root=str(folder), official={"train": kept_lists["database"], "test": kept_lists["test"]},
                   lists=kept_lists, skipped=skipped, image_shape=shape, files=kept_paths)
