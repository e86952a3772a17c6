"""CIFAR-10 / CIFAR-100 readers: the python (pickle, read safely) and binary versions, from
their folder or the unopened archive, checked for layout, sizes and class names."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Callable

import numpy as np

from lthash.data.readers import Dataset
from lthash.data.safe_pickle import safe_loads
from lthash.errors import LthashError


_CIFAR_LAYOUT = {
    ("cifar10", "python"): {"folder": "cifar-10-batches-py", "archive": "cifar-10-python.tar.gz",
                            "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                            "meta": "batches.meta"},
    ("cifar10", "binary"): {"folder": "cifar-10-batches-bin", "archive": "cifar-10-binary.tar.gz",
                            "train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"],
                            "meta": "batches.meta.txt"},
    ("cifar100", "python"): {"folder": "cifar-100-python", "archive": "cifar-100-python.tar.gz",
                             "train": ["train"], "test": ["test"], "meta": "meta"},
    ("cifar100", "binary"): {"folder": "cifar-100-binary", "archive": "cifar-100-binary.tar.gz",
                             "train": ["train.bin"], "test": ["test.bin"], "meta": "fine_label_names.txt"},
}


class _Files:
    """Regular files of one folder or of one tar archive, by base name."""

    def __init__(self, where: str, readers: dict[str, Callable[[], bytes]], closer: Callable[[], None] | None = None) -> None:
        self.where = where
        self.readers = readers
        self.close = closer or (lambda: None)

    def has(self, name: str) -> bool:
        return name in self.readers

    def read(self, name: str) -> bytes:
        if name not in self.readers:
            raise LthashError(f"{self.where}: missing {name}")
        return self.readers[name]()

    @classmethod
    def from_folder(cls, folder: Path) -> "_Files":
        readers = {p.name: p.read_bytes for p in sorted(folder.iterdir()) if p.is_file()}
        return cls(str(folder), readers)

    @classmethod
    def from_archive(cls, archive: Path) -> "_Files":
        try:
            tar = tarfile.open(archive, "r:*")
            members = [m for m in tar.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise LthashError(f"{archive} is not a readable tar archive: {exc}") from exc

        def reader(member: tarfile.TarInfo) -> Callable[[], bytes]:
            def read() -> bytes:
                try:
                    handle = tar.extractfile(member)
                    return handle.read() if handle else b""
                except (tarfile.TarError, OSError, EOFError) as exc:
                    raise LthashError(f"{archive}: cannot read {member.name}: {exc}") from exc
            return read

        return cls(str(archive), {Path(m.name).name: reader(m) for m in members}, tar.close)


def _cifar_files(root: Path, name: str) -> tuple[_Files, str]:
    """Find a CIFAR python or binary version at ``root`` (archive, folder, or parent folder)."""
    if root.is_file():
        files = _Files.from_archive(root)
        try:
            return files, _cifar_version(files, name, root)
        except LthashError:
            files.close()
            raise
    candidates = [root]
    for version in ("python", "binary"):
        layout = _CIFAR_LAYOUT[(name, version)]
        candidates.append(root / layout["folder"])
    for folder in candidates:
        if folder.is_dir():
            files = _Files.from_folder(folder)
            for version in ("python", "binary"):
                if files.has(_CIFAR_LAYOUT[(name, version)]["train"][0]):
                    return files, version
    for version in ("python", "binary"):
        archive = root / _CIFAR_LAYOUT[(name, version)]["archive"]
        if archive.is_file():
            return _Files.from_archive(archive), version
    raise LthashError(f"no {name} data found at {root}: expected the official archive, "
                      f"or a folder such as {_CIFAR_LAYOUT[(name, 'python')]['folder']}")


def _cifar_version(files: _Files, name: str, where: Path) -> str:
    for version in ("python", "binary"):
        if files.has(_CIFAR_LAYOUT[(name, version)]["train"][0]):
            return version
    raise LthashError(f"{where} holds no {name} batches (python or binary version)")


def read_cifar(root: str, name: str) -> Dataset:
    """CIFAR-10/100 (fine labels), train then test pooled; python batches via the safe unpickler."""
    files, version = _cifar_files(Path(root), name)
    try:
        return _read_cifar_files(files, version, name, root)
    finally:
        files.close()


def _read_cifar_files(files: _Files, version: str, name: str, root: str) -> Dataset:
    layout = _CIFAR_LAYOUT[(name, version)]
    class_names = _cifar_class_names(files, layout["meta"], name, version)
    images, labels, official, start = [], [], {}, 0
    for split in ("train", "test"):
        count = 0
        for member in layout[split]:
            where = f"{files.where}:{member}"
            if version == "python":
                batch_images, batch_labels = _cifar_python_batch(files.read(member), where, name)
            else:
                batch_images, batch_labels = _cifar_binary_batch(files.read(member), where, name)
            images.append(batch_images)
            labels.append(batch_labels)
            count += len(batch_labels)
        official[split] = np.arange(start, start + count, dtype=np.int64)
        start += count
    labels_all = np.concatenate(labels)
    if labels_all.size and labels_all.max() >= len(class_names):
        raise LthashError(f"{files.where}: label {int(labels_all.max())} but only {len(class_names)} class names")
    return Dataset(name=name, labels=labels_all, class_names=class_names,
                   images=np.concatenate(images), official=official, root=root)


def _cifar_class_names(files: _Files, meta: str, name: str, version: str) -> list[str]:
    where = f"{files.where}:{meta}"
    if version == "python":
        content = safe_loads(files.read(meta), where)
        key = "label_names" if name == "cifar10" else "fine_label_names"
        if not isinstance(content, dict) or key not in content:
            raise LthashError(f"{where}: no '{key}' entry")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in content[key]]
    else:
        names = [line.strip() for line in files.read(meta).decode().splitlines() if line.strip()]
    expected = 10 if name == "cifar10" else 100
    if len(names) != expected:
        raise LthashError(f"{where}: {len(names)} class names, expected {expected}")
    return names


def _chw_to_hwc(data: np.ndarray, where: str) -> np.ndarray:
    if data.ndim != 2 or data.shape[1] != 3072:
        raise LthashError(f"{where}: image data of shape {data.shape}, expected N x 3072")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _cifar_python_batch(raw: bytes, where: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_loads(raw, where)
    key = "labels" if name == "cifar10" else "fine_labels"
    if not isinstance(batch, dict) or "data" not in batch or key not in batch:
        raise LthashError(f"{where}: expected a dict with 'data' and '{key}'")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8:
        raise LthashError(f"{where}: image data of type {data.dtype}, expected uint8")
    labels = np.asarray(batch[key], dtype=np.int64)
    images = _chw_to_hwc(data, where)
    if labels.shape != (len(images),):
        raise LthashError(f"{where}: {len(images)} images but {labels.size} labels")
    return images, labels


def _cifar_binary_batch(raw: bytes, where: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    label_bytes = 1 if name == "cifar10" else 2
    record = label_bytes + 3072
    if len(raw) % record:
        raise LthashError(f"{where}: {len(raw)} bytes is not a whole number of {record}-byte records")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    return _chw_to_hwc(rows[:, label_bytes:], where), rows[:, label_bytes - 1].astype(np.int64)
