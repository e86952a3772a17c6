"""Artifact I/O: atomic writes, image sets in HDF5, JSON, safetensors.

Contract: no output ever exists under its final name unless it is complete. Every writer
writes to a temporary name in the destination folder and renames it into place. HDF5 files
written here carry the attribute ``complete=1`` as their last write; a reader refuses a file
without it (a truncated file from an older crash), naming the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from lthash.errors import LthashError

FORMAT_VERSION = 1


#: temporary path -> final path of every atomic write in progress, so a writer nested in
#: another's temporary file (``write_image_sets(tmp, ...)`` inside ``atomic_path(out)``) names
#: the user's output, not a dot-file, when it fails.
_PENDING: dict[str, Path] = {}

#: set once a write through :func:`atomic_path` has failed in this process (see
#: :func:`lthash.cli.main`: HDF5 2.x can crash at interpreter exit after a failed write).
WRITE_FAILED = False


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``.

    On an exception the temporary file is removed and ``final`` is left untouched. A full
    disk or an unwritable folder raises :class:`LthashError` naming the output.
    """
    global WRITE_FAILED
    final = Path(final)
    shown = _shown_name(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(final)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.name}.{_HOST}-{os.getpid()}.", suffix=suffix or ".tmp", dir=final.parent
        )
        os.close(fd)
    except OSError as exc:
        WRITE_FAILED = True
        raise LthashError(f"cannot write {shown}: folder {final.parent} is not writable "
                          f"({exc.strerror or exc})") from exc
    tmp_path = Path(tmp)
    _PENDING[str(tmp_path)] = shown
    try:
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, final)
    except Exception as exc:  # h5py and safetensors wrap OS errors in their own types
        reason = None if isinstance(exc, LthashError) else _write_failure(exc, tmp_path)
        tmp_path.unlink(missing_ok=True)
        if reason is None:  # not about the disk (a user error, a bug): keep it as it is
            raise
        WRITE_FAILED = True
        raise LthashError(f"failed writing {shown}: {reason}; nothing was written under that "
                          f"name (any earlier complete file there is kept)") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        _PENDING.pop(str(tmp_path), None)


def _shown_name(final: Path) -> Path:
    """The name a user knows ``final`` by: itself, or its place in the output a temporary stands for."""
    if str(final) in _PENDING:
        return _PENDING[str(final)]
    if str(final.parent) in _PENDING:  # a file written inside an atomic_dir temporary
        return _PENDING[str(final.parent)] / final.name
    return final


#: host and process id in every temporary name: a later writer of the same output removes the
#: temporaries of a writer that was killed (SIGKILL, node loss) on this host, so repeated
#: pre-emptions do not fill the disk with half-written copies.
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _remove_stale_temporaries(final: Path) -> None:
    """Delete temporaries of ``final`` (and ones nested in them) left by a dead process of this host."""
    pattern = re.compile(r"^\.+" + re.escape(final.name) + r"\." + re.escape(_HOST) + r"-(\d+)\.")
    try:
        candidates = [entry for entry in os.scandir(final.parent) if entry.name.startswith(".")]
    except OSError:
        return
    for entry in candidates:
        match = pattern.match(entry.name)
        if match is None or entry.is_symlink():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            if entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_DISK_FULL = "no space left on device (disk or quota full)"
_TOO_LARGE = "file size limit reached (ulimit -f / RLIMIT_FSIZE)"


def _write_failure(exc: BaseException, tmp: Path) -> str | None:
    """A short reason for a failed write of ``tmp``, or None when ``exc`` is not an I/O failure.

    h5py reports a failed write of the HDF5 library as an OSError or RuntimeError whose
    message carries the C errno (``errno = 28``) if anything, so the disk and the file size
    limit are checked too.
    """
    import errno as errno_codes
    import resource

    code = getattr(exc, "errno", None)
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:  # h5py's close error hides the write error in __context__
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(chain)
    if code is None:  # safetensors: "I/O error: File too large (os error 27)"
        found = re.search(r"os error (\d+)", text)
        code = int(found.group(1)) if found else None
    if code in (errno_codes.ENOSPC, errno_codes.EDQUOT) or "errno = 28" in text or "No space left" in text:
        return _DISK_FULL
    if code == errno_codes.EFBIG or "errno = 27" in text or "File too large" in text:
        return _TOO_LARGE
    io_like = (isinstance(exc, OSError) or code is not None or "write failed" in text.lower()
               or "errno =" in text or "I/O error" in text)
    if not io_like:
        return None
    try:
        disk = os.statvfs(tmp.parent)
        if disk.f_bavail * disk.f_frsize < 1 << 20:
            return _DISK_FULL
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and tmp.exists() and tmp.stat().st_size >= limit - (1 << 16):
            return _TOO_LARGE
    except OSError:
        pass
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if code is not None:
        return os.strerror(code)
    return str(exc).splitlines()[0]


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` whole.

    The folder counterpart of :func:`atomic_path` (a diffusers model, a run folder): on an
    exception the temporary folder is removed and ``final`` is left as it was; temporaries of
    a killed writer are removed by the next writer of the same output. A folder already at
    ``final`` is moved aside, the new one renamed in, then the old one deleted.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_HOST}-{os.getpid()}.", suffix=".tmp",
                                    dir=final.parent))
    except OSError as exc:
        raise LthashError(f"cannot write {final}: folder {final.parent} is not writable "
                          f"({exc.strerror or exc})") from exc
    os.chmod(tmp, 0o777 & ~_current_umask())
    _PENDING[str(tmp)] = final
    old = final.parent / f".{final.name}.{_HOST}-{os.getpid()}.old"
    try:
        yield tmp
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:
        reason = None if isinstance(exc, LthashError) else _write_failure(exc, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        if reason is None:
            raise
        raise LthashError(f"failed writing {final}: {reason}; nothing was written under that "
                          f"name (any earlier complete folder there is kept)") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _PENDING.pop(str(tmp), None)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace noise: the form Snakemake params and records use."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LthashError(f"missing file: {path}") from exc
    except json.JSONDecodeError as exc:
        raise LthashError(f"{path} is not valid JSON: {exc}") from exc


@dataclass
class ImageSet:
    """Images (uint8, N x H x W x C), integer labels (N,) or one-hot (N, K), source index (N,).

    ``paths`` replaces ``images`` for datasets too large to copy (read lazily by consumers).
    ``extra`` holds further per-image arrays (N, ...), stored as datasets of the same group.
    """

    images: np.ndarray | None
    labels: np.ndarray
    index: np.ndarray
    paths: list[str] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def write_image_sets(
    path: str | os.PathLike,
    groups: Mapping[str, ImageSet],
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write several image sets as HDF5 groups of one file, atomically.

    Scalars and strings go in as HDF5 attributes; lists and dicts as canonical JSON strings.
    """
    import h5py

    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            for key, value in (attrs or {}).items():
                h5.attrs[key] = _attr_value(value)
            for name, image_set in groups.items():
                grp = h5.create_group(name)
                if image_set.images is not None:
                    images = np.ascontiguousarray(image_set.images, dtype=np.uint8)
                    if images.ndim != 4:
                        raise ValueError(f"images of group {name} must be N x H x W x C")
                    chunks = (min(len(images), 256),) + images.shape[1:] if len(images) else None
                    grp.create_dataset("images", data=images, chunks=chunks)
                if image_set.paths is not None:
                    grp.create_dataset("paths", data=np.array(image_set.paths, dtype=object),
                                       dtype=h5py.string_dtype())
                grp.create_dataset("labels", data=np.asarray(image_set.labels, dtype=np.int64))
                grp.create_dataset("index", data=np.asarray(image_set.index, dtype=np.int64))
                for key, value in image_set.extra.items():
                    if key in _IMAGE_SET_DATASETS:
                        raise ValueError(f"extra dataset {key!r} of group {name} shadows a standard one")
                    grp.create_dataset(key, data=np.asarray(value))
                for key, value in image_set.attrs.items():
                    grp.attrs[key] = _attr_value(value)
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.flush()
            h5.attrs["complete"] = 1


_IMAGE_SET_DATASETS = ("images", "paths", "labels", "index")


def _attr_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return canonical_json(value)
    if value is None:
        return "null"
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{" or value == "null":
        try:
            return json.loads(value)
        except (json.JSONDecodeError, TypeError):
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_complete_h5(path: str | os.PathLike):
    """Open an HDF5 file for reading, refusing a missing, corrupt or incomplete one."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise LthashError(f"missing file: {path}")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise LthashError(f"{path} is not a readable HDF5 file (truncated or corrupt): {exc}; "
                          "delete it and rerun the stage that wrote it") from exc
    if int(h5.attrs.get("complete", 0)) != 1:
        h5.close()
        raise LthashError(f"{path} is incomplete (no 'complete' mark): delete it and rerun the stage")
    return h5


def read_attrs(path: str | os.PathLike, group: str | None = None) -> dict[str, Any]:
    """File-level (or one group's) attributes with JSON strings decoded."""
    with open_complete_h5(path) as h5:
        return decoded_attrs(h5 if group is None else _group(h5, group, path))


def read_image_set(path: str | os.PathLike, group: str, load_images: bool = True) -> ImageSet:
    """Read one group written by :func:`write_image_sets`."""
    with open_complete_h5(path) as h5:
        grp = _group(h5, group, path)
        images = grp["images"][()] if load_images and "images" in grp else None
        extra = {key: grp[key][()] for key in grp if key not in _IMAGE_SET_DATASETS}
        return ImageSet(images=images, extra=extra, **read_item_columns(grp, "paths"))


def read_item_columns(grp: Any, strings: str) -> dict[str, Any]:
    """What an image set's and a code set's HDF5 groups share: ``labels`` and ``index`` (one
    row per item), the group's attributes decoded (:func:`decoded_attrs`) and the optional
    per-item string dataset named ``strings`` (``paths`` / ``sources``) as a list of str, None
    where the group has none; keyed by the dataclass fields they fill."""
    texts = None
    if strings in grp:
        texts = [text.decode() if isinstance(text, bytes) else str(text) for text in grp[strings][()]]
    return {"labels": grp["labels"][()], "index": grp["index"][()], "attrs": decoded_attrs(grp), strings: texts}


def decoded_attrs(node: Any) -> dict[str, Any]:
    """An HDF5 file's or group's attributes with JSON strings decoded (inverse of how the writers store them)."""
    return {key: _decode_attr(value) for key, value in node.attrs.items()}


def _group(h5, group: str, path) -> Any:
    if group not in h5:
        raise LthashError(f"{path} has no group '{group}' (groups: {sorted(h5.keys())})")
    return h5[group]


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                     metadata: Mapping[str, Any] | None = None) -> None:
    """Save torch tensors as safetensors, atomically; metadata values become JSON strings."""
    from safetensors.torch import save_file

    meta = {key: value if isinstance(value, str) else canonical_json(value)
            for key, value in (metadata or {}).items()}
    tensors = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        _sort_safetensors_metadata(Path(tmp))


def _sort_safetensors_metadata(path: Path) -> None:
    """Rewrite the header of a safetensors file in place with its metadata keys sorted.

    safetensors writes the metadata from a hash map, so its key order (and the file's bytes)
    changes from one process to the next; sorted, the same tensors and metadata give the same
    bytes (and the same sha256, which codes files record of the model). The header keeps its
    length (the same JSON, reordered, padded with spaces as the format allows), so the tensor
    data is not moved."""
    import json
    import struct

    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        metadata = header.pop("__metadata__", None)
        if not metadata or len(metadata) < 2:
            return
        ordered = {"__metadata__": dict(sorted(metadata.items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # another JSON spelling than the writer's: leave the file as written
            return
        handle.seek(8)
        handle.write(text + b" " * (length - len(text)))


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, Any], dict[str, str]]:
    """Load tensors and metadata; a missing, truncated or non-safetensors file is a clear error."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise LthashError(f"missing weights file: {path}")
    try:
        with safe_open(str(path), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise LthashError(f"{path} is not a valid safetensors file: {exc}") from exc
    return tensors, metadata
