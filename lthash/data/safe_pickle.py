"""A restricted unpickler for the CIFAR "python version" batches.

Contract: a pickle may build only dicts, lists, tuples, bytes, str, numbers and plain numeric
numpy arrays. Every GLOBAL is refused except the handful of names numpy's own array pickles
refer to (``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``) and ``_codecs.encode``
(Python 3's protocol-2 form of ``bytes``). Those names resolve to local stand-ins that only
record their arguments; arrays are rebuilt afterwards with ``np.frombuffer`` from raw bytes
and a numeric dtype, so no code from the file ever runs. Anything else raises
:class:`LthashError` naming the file and the refused global.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from lthash.errors import LthashError

_NUMERIC_KINDS = "biuf"


class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


class _DtypeStub:
    """Records ``numpy.dtype(descr, align, copy)`` and its byte order from ``__setstate__``."""

    def __init__(self, descr: Any = None, align: Any = False, copy: Any = False) -> None:
        self.descr = descr.decode("latin1") if isinstance(descr, bytes) else descr
        self.order = "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1:
            order = state[1]
            self.order = order.decode("latin1") if isinstance(order, bytes) else order

    def to_numpy(self) -> np.dtype:
        if not isinstance(self.descr, str):
            raise ValueError(f"unsupported dtype description {self.descr!r}")
        dtype = np.dtype(self.descr)
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
            raise ValueError(f"only numeric arrays are allowed, not dtype {self.descr!r}")
        if self.order in "<>":
            dtype = dtype.newbyteorder(self.order)
        return dtype


class _ArrayStub:
    """Records ``ndarray.__setstate__((version, shape, dtype, fortran, raw))``."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] = ()
        self.dtype: _DtypeStub | None = None
        self.fortran = False
        self.raw: bytes = b""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError("malformed array state")
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStub):
            raise ValueError("array dtype is not a plain dtype")
        if isinstance(raw, str):
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise ValueError("array data is not raw bytes")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.fortran = bool(fortran)
        self.raw = bytes(raw)

    def to_numpy(self) -> np.ndarray:
        if self.dtype is None:
            raise ValueError("array without state")
        dtype = self.dtype.to_numpy()
        array = np.frombuffer(self.raw, dtype=dtype)
        order = "F" if self.fortran else "C"
        return array.reshape(self.shape, order=order).copy()


class _BufferArrayStub(_ArrayStub):
    """An array pickled by protocol 5 as ``_frombuffer(buffer, dtype, shape, order)``."""

    def __init__(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> None:
        super().__init__()
        if not isinstance(dtype, _DtypeStub):
            raise ValueError("array dtype is not a plain dtype")
        if not isinstance(buffer, (bytes, bytearray)):
            raise ValueError("array data is not raw bytes")
        self.raw = bytes(buffer)
        self.dtype = dtype
        self.shape = tuple(int(s) for s in shape)
        self.fortran = order == "F"


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if cls is not _NdarrayMarker:
        raise ValueError("_reconstruct of something other than ndarray")
    return _ArrayStub()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _DtypeStub,
    ("numpy.core.numeric", "_frombuffer"): _BufferArrayStub,
    ("numpy._core.numeric", "_frombuffer"): _BufferArrayStub,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id")


def _finish(obj: Any) -> Any:
    if isinstance(obj, _ArrayStub):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _finish(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v) for v in obj)
    if isinstance(obj, (_DtypeStub, type)):
        raise ValueError("a bare dtype or class is not data")
    return obj


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (from ``source``, named in errors) allowing data only.

    Dict keys given as bytes (Python 2 pickles) come back as str; numpy arrays come back as
    fresh numeric ndarrays.
    """
    try:
        raw = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
        return _finish(raw)
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError) as exc:
        raise LthashError(f"{source}: not a safe data pickle ({exc})") from exc
