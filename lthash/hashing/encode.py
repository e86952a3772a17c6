"""``lthash encode`` and :func:`encode_array`: images -> packed binary codes with a trained run."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from lthash.errors import LthashError


@functools.lru_cache(maxsize=4)
def _cached_model(model_dir: str, mtime: float, device: str):
    from lthash.hashing.model import read_model

    return read_model(model_dir, device)


def load_run_model(model_dir: str | Path, device: str = "cpu"):
    """(model in eval mode, metadata) of a run folder, cached per folder, file time and device."""
    from lthash.hashing.model import MODEL_FILE

    path = Path(model_dir) / MODEL_FILE
    if not path.exists():
        raise LthashError(f"{model_dir} is not a finished training run: {MODEL_FILE} missing")
    return _cached_model(str(Path(model_dir).resolve()), path.stat().st_mtime, device)


def encode_array(model_dir: str | Path, images_uint8: np.ndarray, device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """Packed codes (uint8 N x ceil(bits/8), MSB first, bit = [code > 0]) of uint8 N x H x W x C images."""
    from lthash.evaluate.codes import pack_codes
    from lthash.hashing.train import encode_images

    model, images = _model_and_images(model_dir, images_uint8, device)
    return pack_codes(encode_images(model, images, device, batch_size=batch_size))


def _model_and_images(model_dir: str | Path, images_uint8: np.ndarray, device: str) -> tuple[Any, np.ndarray]:
    """The run's model and the images as uint8 N x H x W x C, checked against its input shape."""
    model, meta = load_run_model(model_dir, device)
    images = np.asarray(images_uint8)
    if images.ndim == 3:
        images = images[..., None]
    expected = tuple(meta["input_shape"])
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != expected:
        raise LthashError(f"images are {images.dtype} {tuple(images.shape[1:])}; the model in {model_dir} "
                          f"takes uint8 {expected} (H x W x C)")
    return model, images


class ActivationRecorder:
    """While entered, keeps per image the mean and standard deviation of each channel of every
    activation (ReLU or GELU output) of ``backbone``, over its spatial positions (tokens for a
    transformer), concatenated in call order within each forward pass of the backbone:
    :meth:`rows` is float32 N x F over every pass since entering (F = 0 for a backbone with no
    such activation). The backbone may run inside a whole model's forward (``encode``), so the
    codes and the statistics come from one pass over the images."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone
        self.passes: list[list[Any]] = []
        self.sizes: list[int] = []
        self.hooks: list[Any] = []

    def _start(self, _module: Any, inputs: Any) -> None:
        self.passes.append([])
        self.sizes.append(len(inputs[0]))

    def _keep(self, _module: Any, _inputs: Any, output: Any) -> None:
        if output.ndim == 4:  # N x C x H x W
            self.passes[-1].extend([output.mean(dim=(2, 3)), output.std(dim=(2, 3))])
        elif output.ndim == 3:  # N x tokens x C
            self.passes[-1].extend([output.mean(dim=1), output.std(dim=1)])

    def __enter__(self) -> "ActivationRecorder":
        from torch import nn

        self.passes, self.sizes = [], []
        self.hooks = [self.backbone.register_forward_pre_hook(self._start)]
        self.hooks += [m.register_forward_hook(self._keep) for m in self.backbone.modules()
                       if isinstance(m, (nn.ReLU, nn.GELU))]
        return self

    def __exit__(self, *exc: Any) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def rows(self) -> np.ndarray:
        import torch

        blocks = [torch.cat(found, dim=1).float().cpu().numpy() if found else np.zeros((n, 0), np.float32)
                  for found, n in zip(self.passes, self.sizes)]
        return np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)


def activation_statistics(model_dir: str | Path, images_uint8: np.ndarray, device: str = "cpu",
                          batch_size: int = 256) -> np.ndarray:
    """The :class:`ActivationRecorder` rows of the run's backbone over ``images_uint8``: float32
    N x F. What :mod:`lthash.evaluate.neighbours` compares a query image with the database
    images by."""
    import torch

    from lthash.hashing.data import to_float

    model, images = _model_and_images(model_dir, images_uint8, device)
    with torch.no_grad(), ActivationRecorder(model.backbone) as recorder:
        for start in range(0, len(images), batch_size):
            model.backbone(to_float(images[start: start + batch_size], device))
    return recorder.rows()


def encode_with_statistics(model_dir: str | Path, images_uint8: np.ndarray, device: str = "cpu",
                           batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(packed codes as :func:`encode_array`, activation statistics as :func:`activation_statistics`)
    from one forward pass over the images."""
    import torch

    from lthash.evaluate.codes import pack_codes
    from lthash.hashing.train import encode_images

    model, images = _model_and_images(model_dir, images_uint8, device)
    with torch.no_grad(), ActivationRecorder(model.backbone) as recorder:
        codes = pack_codes(encode_images(model, images, device, batch_size=batch_size))
    return codes, recorder.rows()


def model_checksum(model_dir: str | Path) -> str:
    """sha256 of a run folder's weights file: which model a codes file was encoded with."""
    from lthash.generate.shipped import file_digest
    from lthash.hashing.model import MODEL_FILE

    return file_digest(Path(model_dir) / MODEL_FILE)


def split_groups(split: str | Path) -> tuple[str, ...]:
    """The groups ``lthash encode`` writes: database and query, and validation when the split has it."""
    from lthash.io import open_complete_h5

    with open_complete_h5(split) as h5:
        return ("database", "query") + (("validation",) if "validation" in h5 else ())


def encode_split(model_dir: str | Path, split: str | Path, out: str | Path, device: str = "cpu",
                 batch_size: int = 256, groups: tuple[str, ...] | None = None, profile: bool = False) -> dict[str, Any]:
    """Write the codes file (lthash.evaluate.codes format) of the split's database, query and
    (when present) validation sets, with what a search needs without the split: class names,
    dataset, the model's input shape and checksum, and each item's source file when the
    dataset is made of image files. With ``profile``, also the search's nearest-neighbour
    profile of the database beside it (:func:`lthash.evaluate.neighbours.database_profile`),
    so the first search of the run needs not make it; a database of at most
    ``ACTIVATION_REFERENCE`` images gives its codes and its activation statistics in one pass."""
    from lthash.evaluate.codes import CodeSet, write_codes
    from lthash.evaluate.neighbours import ACTIVATION_REFERENCE
    from lthash.io import read_attrs, read_image_set

    _, meta = load_run_model(model_dir, device)
    statistics = None
    split_attrs = read_attrs(split)
    sets = {}
    for group in groups or split_groups(split):
        data = read_image_set(split, group)
        if group == "database":
            database = data.images
        if data.images is None:
            raise LthashError(f"{split}/{group} holds image paths, not pixels")
        if group == "database" and profile and len(data.images) <= ACTIVATION_REFERENCE:
            codes, statistics = encode_with_statistics(model_dir, data.images, device, batch_size)
        else:
            codes = encode_array(model_dir, data.images, device, batch_size)
        files = data.extra.get("files")
        sources = None if files is None else [f.decode() if isinstance(f, bytes) else str(f) for f in files]
        sets[group] = CodeSet(codes=codes, labels=data.labels, index=data.index, bits=int(meta["bits"]),
                              sources=sources)
    attrs = {"model": str(model_dir), "model_sha256": model_checksum(model_dir), "method": meta["method"],
             "backbone": meta["backbone"], "input_shape": list(meta["input_shape"]), "split": str(split),
             "dataset": split_attrs.get("dataset"), "class_names": split_attrs.get("class_names")}
    if split_attrs.get("root"):
        attrs["root"] = split_attrs["root"]
    write_codes(out, sets, attrs=attrs)
    if profile:
        from lthash.evaluate.neighbours import database_profile

        if "database" not in sets:
            raise LthashError("the nearest-neighbour profile is of the database: encode the database group too")
        database_profile(out, sets["database"].codes, int(meta["bits"]), model=model_dir, device=device,
                         pictures=lambda rows: list(database[rows]), statistics=statistics)
    return {group: len(code_set) for group, code_set in sets.items()}
