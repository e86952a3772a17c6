"""A small CNN classifier of uint8 images: one home for the quality judge and the filter judge.

- The quality stage's judge (:mod:`lthash.generate.quality`) is trained on ``train_balanced``
  with plain cross-entropy. It is a measurement instrument and never feeds the method.
- The synthesis filter's judge (``lthash filter-judge``) is trained on the long-tail training
  set alone (group ``train``) with class-balanced cross-entropy: class ``c`` with ``n_c``
  training images weighs ``w_c = (1/n_c) / mean_k(1/n_k)`` (mean over the classes present),
  and a batch's loss is ``sum_i w_{y_i} CE_i / sum_i w_{y_i}``.

Weights are saved as safetensors with the architecture in the metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lthash.errors import LthashError
from lthash.io import load_safetensors, read_image_set, save_safetensors

WEIGHTS_FILE = "judge.safetensors"
RECORD_FILE = "judge.json"


class Judge(nn.Module):
    """Two conv layers and a linear head over images scaled to [-1, 1] (any H x W)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.channels, self.num_classes = int(channels), int(num_classes)
        self.body = nn.Sequential(
            nn.Conv2d(self.channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, 128), nn.ReLU())
        self.head = nn.Linear(128, self.num_classes)

    @staticmethod
    def _tensor(images: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def _batched(self, module: nn.Module, images: np.ndarray, width: int, chunk: int = 512) -> np.ndarray:
        """``module`` (the whole judge or its body) over uint8 images in chunks, as an N x ``width`` array."""
        if images.ndim != 4 or images.shape[-1] != self.channels:
            raise LthashError(f"the judge takes N x H x W x {self.channels} images, got shape {images.shape}")
        self.eval()
        parts = [module(self._tensor(images[i:i + chunk])).numpy() for i in range(0, len(images), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """N x num_classes logits of uint8 N x H x W x C images."""
        return self._batched(self, images, self.num_classes)

    def features(self, images: np.ndarray) -> np.ndarray:
        """N x 128 penultimate features (the input of the linear head)."""
        return self._batched(self.body, images, self.head.in_features)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Softmax class probabilities, N x num_classes."""
        logits = self.logits(images).astype(np.float64)
        logits -= logits.max(1, keepdims=True)
        expo = np.exp(logits)
        return expo / expo.sum(1, keepdims=True)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images).argmax(1)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``w_c = (1/n_c) / mean(1/n_k)`` over the classes present; 0 for an absent class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return inverse / inverse[counts > 0].mean()


def train_judge(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
                class_balanced: bool, epochs: int = 6, batch: int = 128, lr: float = 2e-3,
                init: Judge | None = None) -> Judge:
    """Fit a :class:`Judge` with Adam on real uint8 N x H x W x C images and integer labels.

    Initialisation (or ``init``'s weights, copied: ``init`` itself is left as it is) and batch
    order come from ``seed``; ``class_balanced`` weighs the cross-entropy by :func:`class_weights`.
    """
    images, labels = np.asarray(images), np.asarray(labels, dtype=np.int64)
    if len(images) == 0:
        raise LthashError("the judge classifier needs real images (its training group is empty)")
    if labels.ndim != 1 or labels.min() < 0 or labels.max() >= num_classes:
        raise LthashError(f"the judge needs single-label classes in [0, {num_classes})")
    torch.manual_seed(seed)
    judge = Judge(images.shape[-1], num_classes)
    if init is not None:
        judge.load_state_dict(init.state_dict())
    x, y = judge._tensor(images), torch.as_tensor(labels)
    weight = torch.as_tensor(class_weights(labels, num_classes), dtype=torch.float32) if class_balanced else None
    opt = torch.optim.Adam(judge.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    judge.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            loss = nn.functional.cross_entropy(judge(x[idx]), y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return judge.eval()


def save_judge(judge: Judge, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Weights as safetensors (atomic), architecture and ``metadata`` in its header."""
    meta = dict(metadata or {}, channels=judge.channels, num_classes=judge.num_classes)
    save_safetensors(path, judge.state_dict(), meta)


def load_judge(path: str | os.PathLike) -> tuple[Judge, dict[str, str]]:
    """(judge, header metadata) from a file written by :func:`save_judge`."""
    tensors, meta = load_safetensors(path)
    try:
        judge = Judge(int(meta["channels"]), int(meta["num_classes"]))
        judge.load_state_dict(tensors)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise LthashError(f"{path} is not a judge written by lthash filter-judge: {exc}") from exc
    return judge.eval(), meta


def judge_weights(folder: str | os.PathLike) -> Path:
    return Path(folder) / WEIGHTS_FILE


def train_filter_judge(split_path: str | os.PathLike, out: str | os.PathLike,
                       params: Mapping[str, Any]) -> dict[str, Any]:
    """Train the filter judge on the split's ``train`` group (class-balanced) and write ``out/``.

    ``out/judge.safetensors`` holds the weights; ``out/class_features.safetensors`` each class's
    feature mean and radius (:mod:`lthash.generate.filtering`); ``out/judge.json`` the record: class names,
    training counts, the digest of the training indices, and the accuracy on the split's
    ``validation`` group (null when the split has none; the query group is never read).
    ``params`` is the ``generate`` section (``seed``, ``filter_judge``).
    """
    from lthash.generate.corpus import index_digest
    from lthash.generate.filtering import class_feature_reference, write_reference
    from lthash.io import atomic_dir, open_complete_h5, read_attrs, write_json

    settings = params["filter_judge"]
    seed = int(params["seed"])
    class_names = list(read_attrs(split_path)["class_names"])
    train = read_image_set(split_path, "train")
    if train.images is None or train.labels.ndim != 1:
        raise LthashError(f"{split_path}: the filter judge needs the train group's images with single labels")
    judge = train_judge(train.images, train.labels, len(class_names), seed, class_balanced=True,
                        epochs=int(settings["epochs"]))
    record: dict[str, Any] = {
        "class_names": class_names, "trained_on": "train", "class_balanced": True, "seed": seed,
        "settings": settings, "train_counts": np.bincount(train.labels, minlength=len(class_names)).tolist(),
        "train_index_sha256": index_digest(train.index), "validation_accuracy": None,
    }
    with open_complete_h5(split_path) as h5:
        has_validation = "validation" in h5 and len(h5["validation"]["labels"]) > 0
    if has_validation:
        validation = read_image_set(split_path, "validation")
        pred = judge.predict(validation.images)
        record["validation_accuracy"] = float((pred == validation.labels).mean())
        record["validation_accuracy_per_class"] = {
            class_names[c]: float((pred[validation.labels == c] == c).mean())
            for c in range(len(class_names)) if (validation.labels == c).any()}
    centres, radii = class_feature_reference(judge.features(train.images), train.labels, len(class_names))
    record["feature_radius_per_class"] = {name: float(r) for name, r in zip(class_names, radii)}
    with atomic_dir(out) as tmp:
        save_judge(judge, judge_weights(tmp), {"trained_on": "train", "class_balanced": True, "seed": seed})
        write_reference(tmp, centres, radii)
        write_json(tmp / RECORD_FILE, record)
    return record


def check_judge_for(folder: str | os.PathLike, split_path: str | os.PathLike,
                    class_names: list[str]) -> tuple[str, dict[str, Any]]:
    """Refuse a judge made for other classes or another split's training set; returns its
    weights' SHA-256 and its record (``judge.json``)."""
    from lthash.generate.corpus import index_digest
    from lthash.generate.shipped import file_digest
    from lthash.io import read_json

    folder = Path(folder)
    record = read_json(folder / RECORD_FILE)
    if list(record.get("class_names", [])) != list(class_names):
        raise LthashError(f"filter judge {folder} is for classes {record.get('class_names')}, "
                          f"the plan has {class_names}")
    train = read_image_set(split_path, "train", load_images=False)
    if record.get("train_index_sha256") != index_digest(train.index):
        raise LthashError(f"filter judge {folder} was trained on another split's train group than "
                          f"{split_path}: rerun lthash filter-judge")
    weights = judge_weights(folder)
    if not weights.exists():
        raise LthashError(f"filter judge {folder} has no {WEIGHTS_FILE}: rerun lthash filter-judge")
    return file_digest(weights), record
