"""Write a dataset as an ImageFolder tree (one sub-folder of PNG files per class).

Used to make a dataset the defaults were not tuned on (scikit-learn's 8x8 digits upscaled)
available to the ``imagefolder`` reader, exactly as a user's own photos would be.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from lthash.errors import LthashError


def export_imagefolder(dataset_cfg: Mapping[str, Any], out: str | os.PathLike, size: int | None = None) -> dict[str, int]:
    """Write every image of the dataset to ``out/<class name>/<index>.png`` (bilinear resize to ``size``).

    Refuses to write into a folder that already holds files (nothing a user made is overwritten).
    Returns the number of images per class.
    """
    from PIL import Image

    from lthash.data.readers import load_dataset
    from lthash.io import atomic_dir

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LthashError(f"{out} already holds files: export-imagefolder writes only into a new or empty folder")
    dataset = load_dataset(dataset_cfg)
    if dataset.images is None:
        raise LthashError("export-imagefolder needs a dataset held as pixels (dataset.store: pixels)")
    counts: dict[str, int] = {}
    with atomic_dir(out) as tmp:
        for index, (image, label) in enumerate(zip(dataset.images, dataset.labels)):
            name = dataset.class_names[int(label)].replace("/", "_")
            folder = tmp / name
            folder.mkdir(exist_ok=True)
            picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            if size is not None:
                picture = picture.resize((size, size), Image.BILINEAR)
            picture.save(folder / f"{index:06d}.png")
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def counts_summary(counts: Mapping[str, int]) -> str:
    """One line: images per class and the total."""
    return ", ".join(f"{name}: {count}" for name, count in counts.items()) + f" ({sum(counts.values())} images)"
