"""Sample grids and prior-preservation images, drawn through :mod:`lthash.generate.sampler`.

Sampler settings default by model kind (tiny: DDIM 10 steps, guidance 3; Stable Diffusion:
DPM-Solver 50 steps, guidance 7.5); ``steps``/``guidance`` override them.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lthash.generate.models import DiffusionComponents


def sample_images(components: DiffusionComponents, prompts: Sequence[str], settings: Mapping[str, Any],
                  generator: torch.Generator) -> np.ndarray:
    """uint8 N x H x W x C images, one per prompt, at the model's image size (UNet left in its mode)."""
    from lthash.generate.sampler import SamplerConfig, generate

    sampler = SamplerConfig.for_model(components, {"steps": settings.get("steps"),
                                                   "guidance": settings.get("guidance")})
    was_training = components.unet.training
    components.unet.eval()
    try:
        return generate(components, list(prompts), generator, sampler)
    finally:
        components.unet.train(was_training)


def save_grid(images: np.ndarray, path: str | os.PathLike, columns: int = 8, scale: int = 2) -> None:
    """Tile uint8 N x H x W x C images into one PNG (written atomically), nearest-upscaled."""
    from PIL import Image

    from lthash.io import atomic_path

    n, h, w, c = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * h, min(n, columns) * w, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_path(path, suffix=".png") as tmp:
        picture.save(tmp, format="PNG")
