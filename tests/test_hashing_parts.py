"""The building blocks checked against their definitions: greedy DPP MAP vs brute force, class
centres, the class-balanced weights, optimiser-state flattening, and backbone shapes."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from lthash.hashing.centers import (bernoulli_codes, hadamard, hadamard_codes, min_hamming, rejection_codes,
                                    spread_codes)
from lthash.checkpointing import flatten_optimizer_state, unflatten_optimizer_state
from lthash.hashing.dpp import greedy_map_dpp, quality_diversity_kernel
from lthash.hashing.methods.lthnet import build_memory, class_balanced_weights


def brute_force_greedy(kernel: np.ndarray, k: int) -> list[int]:
    """Greedy MAP by explicit determinants: add the item maximising det(L_S)."""
    chosen: list[int] = []
    for _ in range(k):
        gains = [np.linalg.det(kernel[np.ix_(chosen + [j], chosen + [j])]) if j not in chosen else -np.inf
                 for j in range(len(kernel))]
        chosen.append(int(np.argmax(gains)))
    return chosen


@pytest.mark.parametrize("seed", range(5))
def test_fast_greedy_dpp_matches_determinant_greedy(seed):
    rng = np.random.default_rng(seed)
    features = np.abs(rng.standard_normal((12, 6)))
    kernel = quality_diversity_kernel(features, features.mean(axis=0), theta=2.0)
    assert np.all(np.linalg.eigvalsh(kernel) > -1e-9)
    assert greedy_map_dpp(kernel, 4) == brute_force_greedy(kernel, 4)


def test_dpp_prefers_diverse_items_over_duplicates():
    base = np.eye(3)
    features = np.concatenate([base, base[:1] + 1e-6])
    chosen = greedy_map_dpp(quality_diversity_kernel(features, features.mean(axis=0)), 3)
    assert sorted(set(chosen)) == sorted(chosen) and len({tuple(np.round(features[i])) for i in chosen}) == 3


def test_lthnet_memory_holds_centroids_then_prototypes():
    rng = np.random.default_rng(0)
    features = rng.random((30, 5))
    labels = np.repeat(np.arange(3), 10)
    labels[-8:] = 2
    memory = build_memory(features, labels, num_classes=4, k=3, theta=1.0)
    assert memory.shape == (16, 5)
    assert np.allclose(memory[0], features[labels == 0].mean(axis=0))
    assert np.allclose(memory[3], 0)
    protos = memory[4:].reshape(4, 3, 5)
    assert all(any(np.allclose(p, f) for f in features[labels == 1]) for p in protos[1])


def test_class_balanced_weights():
    assert np.allclose(class_balanced_weights(np.array([100, 10]), 0.0), 1.0)
    weights = class_balanced_weights(np.array([100, 10]), 0.999)
    expected = np.array([(1 - 0.999) / (1 - 0.999 ** 100), (1 - 0.999) / (1 - 0.999 ** 10)])
    assert np.allclose(weights, expected / expected.mean())


def test_centres():
    rng = np.random.default_rng(0)
    h = hadamard(16)
    assert np.array_equal(h @ h.T, 16 * np.eye(16))
    assert min_hamming(hadamard_codes(10, 16, rng)) == 8
    assert min_hamming(hadamard_codes(30, 16, rng)) >= 8 and len(hadamard_codes(30, 16, rng)) == 30
    beyond = hadamard_codes(40, 16, rng, min_distance=4)
    assert min_hamming(beyond) >= 4 and np.all(beyond.sum(axis=1) == 0)
    assert min_hamming(rejection_codes(20, 32, rng, min_distance=10)) >= 10
    assert set(np.unique(bernoulli_codes(5, 8, rng))) == {-1.0, 1.0}
    assert min_hamming(spread_codes(10, 32, np.random.default_rng(1))) > min_hamming(bernoulli_codes(10, 32, np.random.default_rng(1)))


def test_optimizer_state_round_trip():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    fresh.load_state_dict(unflatten_optimizer_state(tensors, meta))
    for a, b in zip(opt.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert fresh.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("name,channels,size,dim", [("cnn", 1, 28, 256), ("resnet18", 1, 28, 512),
                                                     ("alexnet", 3, 32, 4096)])
def test_backbones_follow_the_data(name, channels, size, dim):
    from lthash.hashing.backbones import Backbone

    backbone = Backbone(name, channels, size).eval()
    with torch.no_grad():
        out = backbone(torch.rand(2, channels, size, size))
    assert out.shape == (2, dim)
    assert backbone.pre.out_channels == (channels if name == "cnn" else 3)


def test_vit_is_built_offline_at_224():
    from lthash.hashing.backbones import Backbone

    backbone = Backbone("vit_b_16", 1, 28)
    assert backbone.pre.size == 224 and backbone.out_dim == 768 and not backbone.has_map
    assert backbone.pre(torch.rand(1, 1, 28, 28)).shape == (1, 3, 224, 224)
