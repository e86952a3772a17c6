"""Shared test setup: few threads, offline hubs, and small real data fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LTHASH_THREADS", "2")

import pytest  # noqa: E402

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(int(os.environ["LTHASH_THREADS"]))
    except ImportError:
        pass


@pytest.fixture(scope="session")
def fashion_mnist_root() -> str:
    """The Debian package's folder; the test suite requires it (README install step)."""
    if not os.path.exists(os.path.join(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz")):
        pytest.fail("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    return FASHION_MNIST_ROOT


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx_gz(path: str):
    """Minimal reader of an idx file (gzip), for fixtures independent of lthash.data."""
    import gzip

    import numpy as np

    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="session")
def small_split(tmp_path_factory, fashion_mnist_root):
    """A small real Fashion-MNIST split file in the split format (docs/DEVELOPING.md).

    Per class: 20 query, 200 database (disjoint from query), 60 balanced training images
    drawn from the database, and a long-tail training set drawn from those with Zipf sizes
    60 * i^-1 (imbalance factor 10) over a seeded class order.
    """
    import numpy as np

    from lthash.io import ImageSet, write_image_sets

    images = read_idx_gz(os.path.join(fashion_mnist_root, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx_gz(os.path.join(fashion_mnist_root, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(10)
    groups: dict[str, list[np.ndarray]] = {"query": [], "database": [], "train_balanced": [], "train": []}
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        groups["query"].append(idx[:20])
        database = idx[20:220]
        groups["database"].append(database)
        balanced = database[:60]
        groups["train_balanced"].append(balanced)
        rank = int(np.flatnonzero(order == cls)[0]) + 1
        groups["train"].append(balanced[: int(60 * rank ** -1.0)])
    sets = {}
    for name, parts in groups.items():
        index = np.concatenate(parts)
        sets[name] = ImageSet(images=images[index][..., None], labels=labels[index], index=index,
                              attrs={"counts": np.bincount(labels[index], minlength=10).tolist()})
    path = tmp_path_factory.mktemp("split") / "split.h5"
    write_image_sets(path, sets, attrs={"class_names": FASHION_CLASSES, "dataset": "fashion-mnist", "seed": 0})
    return path


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for a test, restored after: the workflow runs these stages
    with one thread, and two threads beside another job on 2 cores ran 4-15x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_clothing_base(tmp_path_factory):
    """A tiny text-to-image base (super-categories clothing, footwear, accessory; 28 x 28 grey),
    saved once for the synthesis tests, which only read it."""
    from lthash.generate.models import build_tiny_components, save_components

    settings = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}
    return save_components(build_tiny_components(["clothing", "footwear", "accessory"], 28, 1, 0, settings),
                           tmp_path_factory.mktemp("tiny_clothing_base") / "base")
