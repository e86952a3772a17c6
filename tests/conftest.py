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
