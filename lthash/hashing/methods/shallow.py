"""Shallow hashing on frozen features: the common part of LSH, PCAH, ITQ and SDH.

A shallow model is a frozen feature extractor (raw pixels, or a backbone from a pretrained
file or from another run) followed by a fitted linear map:

    u = (phi(f(x)) - mu) P,    bit = [u > 0]

``fit`` sees the training features once (no epochs, no gradients) and fills ``mean`` and
``projection`` (and the subclass's own buffers).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lthash.errors import LthashError
from lthash.hashing.methods.base import HashMethod


class PixelFeatures(nn.Module):
    """Raw pixels in [0, 1], flattened: the feature extractor of the CPU default."""

    name = "pixels"
    has_map = False

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        height, width, channels = input_shape
        self.out_dim = height * width * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class ShallowHash(HashMethod):
    """Base of the closed-form methods; subclasses implement :meth:`fit_projection`."""

    trainable = False

    def build(self) -> None:
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("projection", torch.zeros(0, self.bits))

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """phi: identity here; SDH maps to RBF anchor features."""
        return features

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        phi = self.transform(self.backbone(x).float())
        return {"code": (phi - self.mean) @ self.projection}

    @torch.no_grad()
    def fit(self, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Fit on training features (N x D) and labels (N,); return fit statistics."""
        phi = self.transform(torch.from_numpy(features.astype(np.float32))).numpy().astype(np.float64)
        mean = phi.mean(axis=0)
        projection, stats = self.fit_projection(phi - mean, labels)
        self.mean = torch.from_numpy(mean.astype(np.float32))
        self.projection = torch.from_numpy(projection.astype(np.float32))
        return stats

    def fit_projection(self, centred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        raise NotImplementedError

    def check_dims(self, dim: int) -> None:
        if self.bits > dim:
            raise LthashError(f"config key 'hashing.bits': {self.name} cannot make {self.bits} bits "
                              f"from {dim}-d features")


def pca(centred: np.ndarray, components: int) -> np.ndarray:
    """Top principal directions (D x components) of centred data, largest variance first."""
    cov = centred.T @ centred / max(len(centred) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    return vectors[:, np.argsort(values)[::-1][:components]]
