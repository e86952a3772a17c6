"""The images of one class (long-tail ``train`` group only, read by
:func:`lthash.generate.shards.class_train_images`), the reference augmentation, and
the prior-preservation class images (:func:`prior_class_images`, never from the split).

Augmentation follows AttnDreamBooth's (random rotation with p=0.75, resize + random crop,
horizontal flip with p=0.25), done as one affine warp per image driven by an explicit
``torch.Generator`` so a resumed run draws exactly the same batches:

    A = R(theta) * S(1/z) * F  + translation,  theta ~ U(-d, d) w.p. p_rot,  z ~ U(1, max_zoom),
    F = diag(-1, 1) w.p. p_flip,  translation ~ U(-(1 - 1/z), 1 - 1/z)

(zoom z then a random crop of the model resolution == resize by z and random crop). The fill
outside the image is black (as torchvision's default fill), i.e. -1 in model pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from lthash.generate.shards import ClassImages, class_train_images

def load_class_images(split_path: str | os.PathLike, class_index: int) -> ClassImages:
    """Images of ``class_index`` in the split's long-tail ``train`` group, pixels or paths
    (:func:`lthash.generate.shards.class_train_images`)."""
    return class_train_images(split_path, class_index, "nothing to personalise on")


@dataclass(frozen=True)
class Augmentation:
    """Parameters of the reference augmentation (see module docstring)."""

    rotation_p: float
    rotation_degrees: float
    hflip_p: float
    max_zoom: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Augmentation":
        """From validated ``generate.personalize.augment`` (``enabled: false`` is the identity)."""
        if not params["enabled"]:
            return cls.identity()
        return cls(**{key: float(params[key]) for key in cls.__dataclass_fields__})

    @classmethod
    def identity(cls) -> "Augmentation":
        """No warp at all."""
        return cls(rotation_p=0.0, rotation_degrees=0.0, hflip_p=0.0, max_zoom=1.0)

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment ``pixels`` (N x C x H x W in [-1, 1]); random draws come from ``generator``."""
        if self.rotation_p == 0 and self.hflip_p == 0 and self.max_zoom == 1:
            return pixels
        n = pixels.shape[0]
        draws = torch.rand(n, 6, generator=generator)
        rotate = draws[:, 0] < self.rotation_p
        theta = (draws[:, 1] * 2 - 1) * math.radians(self.rotation_degrees) * rotate
        flip = torch.where(draws[:, 2] < self.hflip_p, -1.0, 1.0)
        zoom = 1.0 + draws[:, 3] * (self.max_zoom - 1.0)
        margin = 1.0 - 1.0 / zoom
        shift_x = (draws[:, 4] * 2 - 1) * margin
        shift_y = (draws[:, 5] * 2 - 1) * margin
        cos, sin = torch.cos(theta) / zoom, torch.sin(theta) / zoom
        matrix = torch.stack([
            torch.stack([cos * flip, -sin, shift_x], dim=1),
            torch.stack([sin * flip, cos, shift_y], dim=1),
        ], dim=1).to(pixels.device, pixels.dtype)
        grid = torch.nn.functional.affine_grid(matrix, list(pixels.shape), align_corners=False)
        warped = torch.nn.functional.grid_sample(pixels + 1.0, grid, mode="bilinear",
                                                 padding_mode="zeros", align_corners=False)
        return warped - 1.0


def sample_batch(count: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of one batch: every image once per epoch-sized block, with replacement across blocks.

    With fewer images than ``batch_size`` (a tail class; down to one image) images repeat,
    each repeat augmented differently.
    """
    blocks = math.ceil(batch_size / count)
    order = torch.cat([torch.randperm(count, generator=generator) for _ in range(blocks)])
    return order[:batch_size]


@dataclass(frozen=True)
class PriorImages:
    """Prior-preservation class images as model pixels (N x C x H x W in [-1, 1]), their prompt,
    their ``source`` (``samples`` or ``corpus``) and, for ``corpus``, their dataset indices."""

    pixels: torch.Tensor
    prompt: str
    source: str
    index: np.ndarray | None

    def record(self, weight: float) -> dict[str, Any]:
        """What concept.json says of them."""
        return {"source": self.source, "prompt": self.prompt, "images": int(self.pixels.shape[0]), "weight": weight,
                "index": None if self.index is None else self.index.tolist()}


def prior_class_images(components, base_dir: str | os.PathLike, settings: Mapping[str, Any], key: str,
                       class_names: list[str], words: list[str], class_index: int, grid: Mapping[str, Any],
                       seed: int, cache: str | os.PathLike) -> PriorImages:
    """The ``settings["images"]`` class images of validated ``<method>.prior_preservation``
    (``key`` names it in errors), captioned "a photo of a <word>" with the word the base was
    trained with for the class: its own samples of that prompt (``samples``) or real images of
    its recorded corpus (``corpus``, :func:`lthash.generate.corpus.corpus_class_images`).
    Cached in ``cache`` (the partial folder, whose fingerprint holds the settings)."""
    from pathlib import Path

    from lthash.generate.corpus import corpus_class_images
    from lthash.generate.models import images_to_pixels
    from lthash.generate.prompts import category_prompt
    from lthash.io import load_safetensors, save_safetensors

    prompt, source, count = category_prompt(words[class_index]), str(settings["source"]), int(settings["images"])
    if Path(cache).exists():
        tensors, _ = load_safetensors(cache)
        index = tensors["index"].numpy() if "index" in tensors else None
        return PriorImages(tensors["pixels"], prompt, source, index)
    index = None
    if source == "corpus":
        images, index = corpus_class_images(base_dir, class_names, words, class_index, count, seed, f"{key}.source")
    else:
        from lthash.generate.personalize.sampling import sample_images

        images = sample_images(components, [prompt] * count, grid, torch.Generator().manual_seed(seed))
    pixels = images_to_pixels(images, components.image_size, components.channels)
    save_safetensors(cache, {"pixels": pixels, **({} if index is None else {"index": torch.from_numpy(index)})})
    return PriorImages(pixels, prompt, source, index)
