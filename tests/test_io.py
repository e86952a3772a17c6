"""Shared artifact I/O: atomic writes and incomplete-file detection on the real split fixture."""

from __future__ import annotations

import numpy as np
import pytest

from lthash.errors import LthashError
from lthash.io import atomic_path, read_attrs, read_image_set


def test_small_split_round_trip(small_split):
    train = read_image_set(small_split, "train")
    balanced = read_image_set(small_split, "train_balanced")
    assert train.images.shape[1:] == (28, 28, 1) and train.images.dtype == np.uint8
    assert len(train) < len(balanced)
    assert read_attrs(small_split)["class_names"][0] == "T-shirt/top"


def test_truncated_h5_is_refused(small_split, tmp_path):
    broken = tmp_path / "split.h5"
    broken.write_bytes(small_split.read_bytes()[:5000])
    with pytest.raises(LthashError, match="split.h5"):
        read_image_set(broken, "train")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_files_of_the_same_tensors_and_metadata_are_the_same_bytes(tmp_path):
    """safetensors orders metadata keys from a hash map (random per map); lthash sorts them, so a
    rerun's weights file has the same sha256 as the first run's."""
    import hashlib

    import torch

    from lthash.io import load_safetensors, save_safetensors

    metadata = {"method": "orthohash", "bits": 64, "seed": 0, "backbone": "cnn", "note": "é", "shape": [28, 28, 1]}
    digests = set()
    for i in range(6):
        path = tmp_path / f"{i}.safetensors"
        save_safetensors(path, {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}, metadata)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    tensors, meta = load_safetensors(tmp_path / "0.safetensors")
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3)) and meta["note"] == "é"
    assert meta["bits"] == "64" and meta["shape"] == "[28,28,1]"
