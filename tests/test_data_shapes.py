"""The procedural shapes dataset: deterministic from its seed, read like any dataset, exportable."""

import numpy as np
import pytest

from lthash.data.readers import load_dataset
from lthash.data.shapes import SHAPE_CLASSES, draw_shapes
from lthash.errors import LthashError


def test_the_same_seed_draws_the_same_pixels_and_another_seed_other_ones():
    images, labels = draw_shapes(3, seed=7)
    again, _ = draw_shapes(3, seed=7)
    other, _ = draw_shapes(3, seed=8)
    assert images.shape == (30, 28, 28, 1) and images.dtype == np.uint8
    assert np.array_equal(images, again)
    assert not np.array_equal(images, other)
    assert np.array_equal(labels, np.repeat(np.arange(10), 3))


def test_every_class_draws_a_shape_brighter_than_its_background():
    images, labels = draw_shapes(20, seed=0)
    for label, name in enumerate(SHAPE_CLASSES):
        picture = images[labels == label, ..., 0].astype(float)
        centre = picture[:, 8:20, 8:20].max(axis=(1, 2))
        corner = np.median(picture[:, :4, :4], axis=(1, 2))
        assert (centre > corner + 60).mean() > 0.9, name


def test_classes_differ_more_between_than_within():
    """A nearest-centroid classifier on pixels beats chance (0.10) on 500 held-out images: the
    classes are not noise (rotation and offset keep pixel templates weak: about 0.2)."""
    images, labels = draw_shapes(100, seed=1)
    x = images.reshape(len(images), -1).astype(float)
    train, test = np.arange(len(x)) % 2 == 0, np.arange(len(x)) % 2 == 1
    centroids = np.stack([x[train & (labels == c)].mean(0) for c in range(10)])
    predicted = ((x[test, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == labels[test]).mean() > 0.15


def test_the_dataset_named_shapes_is_260_per_class_from_seed_0():
    dataset = load_dataset({"name": "shapes"})
    assert dataset.class_names == list(SHAPE_CLASSES)
    assert dataset.images.shape == (2600, 28, 28, 1)
    first, _ = draw_shapes(2, 0)
    assert np.array_equal(dataset.images[:2], first[:2]), "class by class from one generator of seed 0"
    with pytest.raises(LthashError, match="dataset"):
        load_dataset({"name": "shape"})


def test_exported_shapes_read_back_as_an_imagefolder(tmp_path):
    from lthash.data.export import export_imagefolder

    counts = export_imagefolder({"name": "shapes"}, tmp_path / "shapes")
    assert counts == {name: 260 for name in sorted(SHAPE_CLASSES)}
    folder = load_dataset({"name": "imagefolder", "root": str(tmp_path / "shapes")})
    assert sorted(folder.class_names) == sorted(SHAPE_CLASSES)
    drawn = load_dataset({"name": "shapes"})
    by_name = {name: np.sort(drawn.images[drawn.labels == i].reshape(260, -1), axis=0)
               for i, name in enumerate(drawn.class_names)}
    for i, name in enumerate(folder.class_names):
        assert np.array_equal(np.sort(folder.images[folder.labels == i].reshape(260, -1), axis=0), by_name[name])
