"""Binary codes: {-1,+1} / {0,1} arrays <-> packed bits, and the codes file.

Packing: bit j of an item is 1 where its code is > 0, stored most-significant-bit first
(``np.packbits`` big-endian), ``ceil(bits / 8)`` bytes per item. The codes file is HDF5 with
one group per set (``database``, ``query``, and ``validation`` when the split has one), each
holding ``codes`` (uint8, N x bytes), ``labels``, ``index`` (position in the source dataset)
and, for image-file datasets, ``sources`` (each item's file, relative to the file attribute
``root``). File attributes: ``bits`` (the code length) and, written by ``lthash encode``,
``class_names``, ``dataset``, ``input_shape``, ``model`` / ``model_sha256`` (the model folder
and its weights' checksum), ``method``, ``backbone``, ``split``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lthash.errors import LthashError
from lthash.io import _attr_value, atomic_path, open_complete_h5, read_item_columns


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack a real (N, bits) array to uint8 (N, ceil(bits/8)); positive entries are 1 bits."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError("codes must be a 2-D array (items x bits)")
    return np.packbits(codes > 0, axis=1, bitorder="big")


def unpack_codes(packed: np.ndarray, bits: int, signed: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_codes`: float32 in {-1,+1} (``signed``) or {0,1}."""
    unpacked = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=bits, bitorder="big")
    out = unpacked.astype(np.float32)
    return out * 2 - 1 if signed else out


def as_words(packed: np.ndarray) -> np.ndarray:
    """View packed uint8 codes as uint64 words (zero-padded to a multiple of 8 bytes).

    Padding bits are zero in every item, so they never add to a Hamming distance.
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    n, width = packed.shape
    padded_width = -(-width // 8) * 8
    if padded_width != width:
        padded = np.zeros((n, padded_width), dtype=np.uint8)
        padded[:, :width] = packed
        packed = padded
    return packed.view(np.uint64)


@dataclass
class CodeSet:
    """Packed codes of one set with their labels (class indices or one-hot rows), index and,
    for image-file datasets, each item's source file (relative to the codes file's ``root``)."""

    codes: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    bits: int
    attrs: dict[str, Any] = field(default_factory=dict)
    sources: list[str] | None = None

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def write_codes(path: str | os.PathLike, sets: Mapping[str, CodeSet], attrs: Mapping[str, Any] | None = None) -> None:
    """Write code sets as HDF5 groups, atomically, with the code length as ``bits``."""
    import h5py

    bits = {code_set.bits for code_set in sets.values()}
    if len(bits) != 1:
        raise ValueError(f"all code sets of one file must share a code length, got {sorted(bits)}")
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["bits"] = bits.pop()
            for key, value in (attrs or {}).items():
                h5.attrs[key] = _attr_value(value)
            for name, code_set in sets.items():
                grp = h5.create_group(name)
                grp.create_dataset("codes", data=np.ascontiguousarray(code_set.codes, dtype=np.uint8))
                grp.create_dataset("labels", data=np.asarray(code_set.labels, dtype=np.int64))
                grp.create_dataset("index", data=np.asarray(code_set.index, dtype=np.int64))
                if code_set.sources is not None:
                    if len(code_set.sources) != len(code_set):
                        raise ValueError(f"code set {name}: {len(code_set.sources)} sources for {len(code_set)} codes")
                    grp.create_dataset("sources", data=np.array(code_set.sources, dtype=object),
                                       dtype=h5py.string_dtype())
                for key, value in code_set.attrs.items():
                    grp.attrs[key] = _attr_value(value)
            h5.flush()
            h5.attrs["complete"] = 1


def read_codes(path: str | os.PathLike, group: str) -> CodeSet:
    """Read one code set, checking its width against the file's code length."""
    with open_complete_h5(path) as h5:
        if group not in h5:
            raise LthashError(f"{path} has no code set '{group}' (sets: {sorted(h5.keys())})")
        bits = int(h5.attrs["bits"])
        grp = h5[group]
        codes = grp["codes"][()]
        if codes.shape[1] != -(-bits // 8):
            raise LthashError(f"{path}/{group}: {codes.shape[1]} bytes per code do not hold {bits} bits")
        return CodeSet(codes=codes, bits=bits, **read_item_columns(grp, "sources"))


def code_set_names(path: str | os.PathLike) -> list[str]:
    """Names of the code sets of a codes file."""
    with open_complete_h5(path) as h5:
        return sorted(key for key in h5.keys() if "codes" in h5[key])

