"""SDH, supervised discrete hashing (Shen et al., CVPR 2015).

    phi(x) = [exp(-||x - a_j||^2 / (2 sigma^2))]_{j=1..m}     RBF features on m training anchors
    min_{B, W, P} ||Y - W^T B||^2 + lambda ||W||^2 + nu ||B - P^T phi(X)||^2,   B in {-1, +1}
    W-step: W = (B B^T + lambda I)^-1 B Y^T
    P-step: P = (phi phi^T + delta I)^-1 phi B^T
    B-step (discrete cyclic coordinate descent, one bit row at a time):
            b_l = sign(q_l - B'^T W' w_l),   Q = W Y + nu P^T phi
"""

from __future__ import annotations

import numpy as np
import torch

from lthash.hashing.methods.base import register
from lthash.hashing.methods.shallow import ShallowHash


@register("sdh")
class SDH(ShallowHash):
    def build(self) -> None:
        super().build()
        self.register_buffer("anchors", torch.zeros(0, 0))
        self.register_buffer("sigma", torch.ones(()))

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        dist = torch.cdist(features, self.anchors.to(features.dtype)).pow(2)
        return torch.exp(-dist / (2 * self.sigma.to(features.dtype) ** 2))

    @torch.no_grad()
    def fit(self, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        count = min(int(self.options["anchors"]), len(features))
        anchors = features[self.rng.choice(len(features), count, replace=False)].astype(np.float32)
        self.anchors = torch.from_numpy(anchors)
        sample = torch.from_numpy(features[: min(len(features), 2000)].astype(np.float32))
        self.sigma = torch.cdist(sample, self.anchors).mean().clamp(min=1e-6)
        return super().fit(features, labels)

    def fit_projection(self, centred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        phi = centred.T                                           # m x n
        y = np.eye(self.num_classes)[labels].T                    # C x n
        lam, nu, delta = (float(self.options[k]) for k in ("lambda", "nu", "delta"))
        b = np.where(self.rng.standard_normal((self.bits, phi.shape[1])) >= 0, 1.0, -1.0)
        gram_inv_phi = np.linalg.solve(phi @ phi.T + delta * np.eye(len(phi)), phi)   # (phi phi^T + dI)^-1 phi
        for _ in range(int(self.options["iterations"])):
            w = np.linalg.solve(b @ b.T + lam * np.eye(self.bits), b @ y.T)          # bits x C
            p = gram_inv_phi @ b.T                                                    # m x bits
            q = w @ y + nu * (p.T @ phi)                                              # bits x n
            for _ in range(int(self.options["dcc_iterations"])):
                for bit in range(self.bits):
                    rest = np.arange(self.bits) != bit
                    b[bit] = np.where(q[bit] - (w[bit] @ w[rest].T) @ b[rest] >= 0, 1.0, -1.0)
        p = gram_inv_phi @ b.T
        accuracy = float(np.mean(np.argmax(w.T @ b, axis=0) == labels))
        return p, {"train_code_accuracy": accuracy}
