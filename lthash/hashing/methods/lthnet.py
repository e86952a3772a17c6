"""LTHNet, Long-Tail Hashing Network (Chen et al., SIGIR 2021), and its square-loss variant.

    v      = ReLU(FC(f(x)))                          direct feature (2000-d in the paper)
    M      = per class: centroid m_i  +  k DPP prototypes       ((k+1)C x d, rebuilt every epoch)
    o      = softmax(FC(v)),   e = tanh(FC(v))       attention over memory, selector
    v_meta = v + e * (o^T M)
    h      = tanh(FC(v_meta)),   y_hat = softmax(FC(h))
    L_CB   = w_y * CE(y_hat, y),   w_y = (1 - beta) / (1 - beta^{n_y})   (beta = 0: plain CE)
    L_sq   = w_y * ||y_hat - onehot(y)||^2           (LTHNet_sq)
    FC(h) + tau * log pi in both under hashing.train.balance: logit_adjusted (losses.logit_adjustment)

Prototypes: greedy MAP inference of a DPP over the class's direct features with kernel
L = diag(q) S diag(q), S = cosine similarity (diversity), q_i = exp(theta cos(v_i, m)) (quality).
Class weights are normalised to mean 1 over classes (Cui et al. 2019), so beta only shifts the balance.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lthash.hashing.dpp import greedy_map_dpp, quality_diversity_kernel
from lthash.hashing.losses.logit_adjustment import adjust_logits
from lthash.hashing.methods.base import HashMethod, hash_head, register


def class_balanced_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """w_c = (1 - beta) / (1 - beta^{n_c}), scaled to mean 1 over classes; beta = 0 gives all ones."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1)
    weights = (1 - beta) / (1 - np.power(beta, counts)) if beta > 0 else np.ones_like(counts)
    return (weights / weights.mean()).astype(np.float32)


@register("lthnet")
class LTHNet(HashMethod):
    has_class_logits = True

    def build(self) -> None:
        dim, slots = int(self.options["feature_dim"]), (int(self.options["prototypes"]) + 1) * self.num_classes
        self.direct = nn.Sequential(nn.Linear(self.backbone.out_dim, dim), nn.ReLU(inplace=True))
        self.attention = nn.Linear(dim, slots)
        self.selector = nn.Linear(dim, dim)
        self.hash = hash_head(dim, self.bits)
        self.classifier = nn.Linear(self.bits, self.num_classes)
        self.register_buffer("memory", torch.zeros(slots, dim))
        self.register_buffer("class_weights",
                             torch.from_numpy(class_balanced_weights(self.class_counts, float(self.options["beta"]))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.direct(self.backbone(x))
        o = torch.softmax(self.attention(v), dim=1)
        e = torch.tanh(self.selector(v))
        v_meta = v + e * (o @ self.memory.to(o.dtype))
        h = torch.tanh(self.hash(v_meta))
        return {"code": h, "logits": self.classifier(h), "direct": v}

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        logits = adjust_logits(out["logits"].float(), self.logit_offset)
        per_sample = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
        return (self.class_weights[labels] * per_sample).mean()

    @torch.no_grad()
    def on_epoch_start(self, features: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Rebuild the memory from the direct features of every training image (eval mode)."""
        was_training = self.training
        self.eval()
        feats, labels = [], []
        for images, batch_labels in features():
            feats.append(self.direct(self.backbone(images)).float().cpu())
            labels.append(batch_labels.cpu())
        self.train(was_training)
        self.memory.copy_(torch.from_numpy(build_memory(torch.cat(feats).numpy(), torch.cat(labels).numpy(),
                                                        self.num_classes, int(self.options["prototypes"]),
                                                        float(self.options["quality_theta"]))))


def build_memory(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int, theta: float) -> np.ndarray:
    """Rows 0..C-1: class centroids (eq. 3); then k DPP prototypes per class (eq. 4), class-major.

    A class with fewer than k samples repeats its centroid; an absent class gets zeros.
    """
    dim = features.shape[1]
    centroids = np.zeros((num_classes, dim), dtype=np.float32)
    prototypes = np.zeros((num_classes, k, dim), dtype=np.float32)
    for cls in range(num_classes):
        members = features[labels == cls]
        if not len(members):
            continue
        centroids[cls] = members.mean(axis=0)
        prototypes[cls] = centroids[cls]
        chosen = greedy_map_dpp(quality_diversity_kernel(members, centroids[cls], theta), k) if k else []
        prototypes[cls, : len(chosen)] = members[chosen]
    return np.concatenate([centroids, prototypes.reshape(num_classes * k, dim)])


@register("lthnet_sq")
class LTHNetSquare(LTHNet):
    """LTHNet with the square loss of its ablation: w_y * ||softmax(logits) - onehot(y)||^2."""

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(adjust_logits(out["logits"].float(), self.logit_offset), dim=1)
        per_sample = (probs - F.one_hot(labels, self.num_classes).float()).pow(2).sum(dim=1)
        return (self.class_weights[labels] * per_sample).mean()
