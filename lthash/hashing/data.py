"""Training data: the split's real images, synthetic shards, or a class-balanced mix; the
validation carve; batching and augmentation that depend only on (seed, epoch).

Everything random here is drawn from generators seeded by (seed, epoch, purpose), so the data
order and augmentation of an epoch are the same whether or not the run was resumed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lthash.errors import LthashError
from lthash.io import read_attrs, read_image_set

log = logging.getLogger("lthash.hashing")


@dataclass
class TrainingSet:
    """Images (uint8 N x H x W x C), class labels (N,), whether each is synthetic, class names."""

    images: np.ndarray
    labels: np.ndarray
    synthetic: np.ndarray
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, index: np.ndarray) -> "TrainingSet":
        return TrainingSet(self.images[index], self.labels[index], self.synthetic[index], self.class_names, dict(self.info))


def class_names_of(split: str | Path) -> list[str]:
    attrs = read_attrs(split)
    names = attrs.get("class_names")
    if not isinstance(names, list) or not names:
        raise LthashError(f"{split} has no 'class_names' attribute")
    return [str(n) for n in names]


def single_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class indices; one-hot rows with exactly one 1 are accepted, multi-label rows are refused."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if not np.all(labels.sum(axis=1) == 1):
            raise LthashError(f"{where}: multi-label training is not supported by lthash train")
        labels = labels.argmax(axis=1)
    return labels.astype(np.int64)


def read_real(split: str | Path, group: str) -> tuple[np.ndarray, np.ndarray]:
    data = read_image_set(split, group)
    if data.images is None:
        raise LthashError(f"{split}/{group} holds image paths, not pixels: rebuild the split with images")
    return data.images, single_labels(data.labels, f"{split}/{group}")


def read_shards(shards: Sequence[str | Path], shape: tuple[int, int, int], class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate synthetic shards, checking image shape and class labels against the split."""
    if not shards:
        raise LthashError("--mode synthetic/mix needs at least one --synthetic SHARD.h5")
    images, labels = [], []
    for shard in shards:
        data = read_image_set(shard, "synthetic")
        if data.images is None or tuple(data.images.shape[1:]) != tuple(shape):
            got = None if data.images is None else tuple(data.images.shape[1:])
            raise LthashError(f"synthetic shard {shard}: images are {got} (H x W x C) but the split's are "
                              f"{tuple(shape)}; regenerate the shard at the split's size")
        lab = single_labels(data.labels, f"{shard}/synthetic")
        if len(lab) and (lab.min() < 0 or lab.max() >= len(class_names)):
            raise LthashError(f"synthetic shard {shard}: labels outside 0..{len(class_names) - 1}")
        name = data.attrs.get("class_name")
        index = data.attrs.get("class_index")
        if name is not None and index is not None and 0 <= int(index) < len(class_names) \
                and class_names[int(index)] != str(name):
            raise LthashError(f"synthetic shard {shard}: class_name '{name}' is not class {index} "
                              f"('{class_names[int(index)]}') of the split")
        images.append(data.images)
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def mix_counts(real: np.ndarray, available: np.ndarray, options: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """Synthetic images to add per class so every class reaches one total (``options``: validated ``hashing.mix``).

    target = ``target_per_class`` or round(``target_factor`` x largest real class);
    synthetic_c = min(target - real_c, available_c, floor(max_synthetic_fraction x target)), >= 0.
    """
    target = options["target_per_class"] or int(round(options["target_factor"] * real.max()))
    cap = int(np.floor(options["max_synthetic_fraction"] * target))
    want = np.clip(target - real, 0, cap)
    short = np.flatnonzero(want > available)
    if len(short):
        log.warning("mix: classes %s have fewer synthetic images than needed (%s < %s); using all",
                    short.tolist(), available[short].tolist(), want[short].tolist())
    return np.minimum(want, available), int(target)


def load_training_set(split: str | Path, group: str, mode: str, shards: Sequence[str | Path],
                      mix_options: Mapping[str, Any], seed: int) -> TrainingSet:
    """The images a run trains on: ``real`` (the split's group), ``synthetic`` (shards only) or ``mix``."""
    names = class_names_of(split)
    real_images, real_labels = read_real(split, group)
    if len(real_labels) and real_labels.max() >= len(names):
        raise LthashError(f"{split}/{group}: labels exceed the {len(names)} class names")
    shape = tuple(real_images.shape[1:])
    if mode == "real":
        return TrainingSet(real_images, real_labels, np.zeros(len(real_labels), bool), names,
                           {"real_counts": np.bincount(real_labels, minlength=len(names)).tolist()})
    syn_images, syn_labels = read_shards(shards, shape, names)  # type: ignore[arg-type]
    if mode == "synthetic":
        return TrainingSet(syn_images, syn_labels, np.ones(len(syn_labels), bool), names,
                           {"synthetic_counts": np.bincount(syn_labels, minlength=len(names)).tolist()})
    if mode != "mix":
        raise LthashError(f"--mode must be real, synthetic or mix, not '{mode}'")
    real_counts = np.bincount(real_labels, minlength=len(names))
    add, target = mix_counts(real_counts, np.bincount(syn_labels, minlength=len(names)), mix_options)
    rng = np.random.default_rng([seed, 101])
    chosen = [rng.permutation(np.flatnonzero(syn_labels == c))[: add[c]] for c in range(len(names))]
    pick = np.sort(np.concatenate(chosen)).astype(np.int64)
    return TrainingSet(np.concatenate([real_images, syn_images[pick]]),
                       np.concatenate([real_labels, syn_labels[pick]]),
                       np.concatenate([np.zeros(len(real_labels), bool), np.ones(len(pick), bool)]), names,
                       {"real_counts": real_counts.tolist(), "synthetic_counts": add.tolist(), "target_per_class": target})


def carve_validation(data: TrainingSet, fraction: float, seed: int) -> tuple[TrainingSet, TrainingSet | None]:
    """Hold out round(fraction x n_c) images of each class (at most n_c - 1; real images first)."""
    if fraction <= 0:
        return data, None
    rng = np.random.default_rng([seed, 202])
    held = []
    for cls in range(data.num_classes):
        members = np.flatnonzero(data.labels == cls)
        members = np.concatenate([rng.permutation(members[~data.synthetic[members]]),
                                  rng.permutation(members[data.synthetic[members]])])
        held.append(members[: min(int(round(fraction * len(members))), max(len(members) - 1, 0))])
    val = np.sort(np.concatenate(held)).astype(np.int64)
    keep = np.setdiff1d(np.arange(len(data)), val)
    return data.subset(keep), data.subset(val)


def to_float(images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 N x H x W x C -> float N x C x H x W in [0, 1] on ``device``."""
    tensor = torch.as_tensor(images).to(device)
    return tensor.permute(0, 3, 1, 2).float().div_(255.0)


def augment(batch: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shift by up to ``pad`` px (reflect-padded crop) and horizontal flip, per image."""
    n, _, height, width = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(batch)
    for i in range(n):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        crop = padded[i, :, dy: dy + height, dx: dx + width]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def class_balanced_draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """len(labels) indices drawn with replacement: P(class c) = 1 / (classes present), then
    P(image i | c) = 1 / n_c, so every class is equally likely in every batch."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    pick = rng.integers(len(counts), size=len(labels))
    return order[starts[pick] + rng.integers(0, counts[pick])]


def replace_real(order: np.ndarray, labels: np.ndarray, synthetic: np.ndarray, probability: float,
                 rng: np.random.Generator) -> np.ndarray:
    """``order`` with each real image whose class has synthetic images in the set replaced, with
    probability ``probability``, by one of them drawn uniformly (Diff-Mix's replacement of a
    real sample by a synthetic one; classes without synthetic images keep their real ones)."""
    order = np.array(order, copy=True)
    labels, synthetic = np.asarray(labels), np.asarray(synthetic, dtype=bool)
    swap = (rng.random(len(order)) < probability) & ~synthetic[order]
    for cls in np.unique(labels[order[swap]]):
        pool = np.flatnonzero(synthetic & (labels == cls))
        where = np.flatnonzero(swap & (labels[order] == cls))
        if len(pool):
            order[where] = pool[rng.integers(len(pool), size=len(where))]
    return order


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shard: tuple[int, int] = (0, 1),
                  balanced_labels: np.ndarray | None = None,
                  replacement: tuple[np.ndarray, np.ndarray, float] | None = None) -> list[np.ndarray]:
    """Index batches of one epoch, a function of (seed, epoch) only: a shuffle of the n images
    (instance sampling) or, given ``balanced_labels``, n class-balanced draws
    (:func:`class_balanced_draw`), cut into the same batches. ``replacement`` = (labels,
    synthetic, p) with p > 0 then swaps real images for synthetic ones (:func:`replace_real`).
    The last partial batch is dropped when it would hold a single image (BatchNorm needs two).
    ``shard`` = (process index, process count) gives each accelerate process its slice of every
    batch."""
    if balanced_labels is None:
        order = np.random.default_rng([seed, epoch, 303]).permutation(n)
    else:
        if len(balanced_labels) != n:
            raise ValueError(f"{len(balanced_labels)} labels for {n} images")
        order = class_balanced_draw(balanced_labels, np.random.default_rng([seed, epoch, 313]))
    if replacement is not None and replacement[2] > 0:
        order = replace_real(order, *replacement, rng=np.random.default_rng([seed, epoch, 323]))
    batches = [order[i: i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    rank, world = shard
    return [b[rank::world] for b in batches] if world > 1 else batches


def ordered_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                    device: str | torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The whole set in file order, unaugmented (memory rebuilding, validation, encoding)."""
    for start in range(0, len(images), batch_size):
        yield (to_float(images[start: start + batch_size], device),
               torch.as_tensor(labels[start: start + batch_size]).to(device))
